"""Whole-image inference on the image as acquired, and the metrics a radiologist would see.

:class:`Predictor` applies a network with its :class:`~tl_med.models.spec.ModelSpec` the way the
MONAI model zoo does: the preprocessing chain (RAS, the model's spacing, intensity; no crop), a
``SlidingWindowInferer`` over the whole image, softmax, then ``Invertd`` (linear interpolation of
the probabilities) back onto the input's own grid, then argmax. :func:`evaluate_native` scores
those masks against the labels on the image's own grid: the test Dice and HD95 the pipeline
reports and the approval gate uses.

Example:
    >>> # predictor = Predictor(model, spec, torch.device("cpu"))
    >>> # mask = predictor.predict("case.nii.gz").mask      # on case.nii.gz's own voxel grid
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.transforms import Compose, EnsureChannelFirstd, Invertd

from tl_med.config import InferenceConfig
from tl_med.data.transforms import preprocessing
from tl_med.errors import InputError
from tl_med.evaluate import CaseMetrics, case_scores
from tl_med.models.spec import ModelSpec
from tl_med.progress import track

__all__ = ["Prediction", "Predictor", "window_inferer", "evaluate_native", "voxel_spacing"]


def window_inferer(patch_size: tuple[int, ...], cfg: InferenceConfig) -> SlidingWindowInferer:
    """Windows of the training patch size over the whole (preprocessed) image; edges replicated."""
    return SlidingWindowInferer(roi_size=patch_size, sw_batch_size=cfg.sw_batch_size, overlap=cfg.overlap,
                                mode=cfg.mode, padding_mode="replicate")


def voxel_spacing(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel size (mm) along each array axis of an image with this affine."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))


@dataclass(frozen=True)
class Prediction:
    """Label values (``uint8``) on the input's own voxel grid, and that grid's RAS affine; a
    multi-task model's case-level class probabilities (``{class: p}``; empty otherwise)."""

    mask: np.ndarray
    affine: np.ndarray
    classes: dict[str, float] = field(default_factory=dict)


class Predictor:
    """A network and its spec, applied to whole images (NIfTI paths or in-memory volumes)."""

    def __init__(self, model: torch.nn.Module, spec: ModelSpec, device: torch.device) -> None:
        self.model, self.spec, self.device = model, spec, device
        self.window = window_inferer(spec.preprocess.patch_size, spec.inference)
        chain = preprocessing(spec.preprocess, spec.landmarks, keys=("image",), track_meta=True)
        self.from_file = Compose(chain)
        # an in-memory volume (a DICOM series read by tl_med.dicom_input) starts as a MetaTensor
        self.from_array = Compose([EnsureChannelFirstd(keys="image", channel_dim="no_channel"), *chain[2:]])

    @torch.no_grad()
    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """Sliding-window logits of a preprocessed image (channel first, no batch axis)."""
        self.model.eval().to(self.device)
        return self.window(image[None].to(self.device), self.model)[0].float().cpu()

    def logits_and_classes(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Sliding-window logits of a preprocessed image and, for a multi-task model, its case-level
        class probabilities from the same pass ({} otherwise)."""
        from tl_med.multitask import class_head, windowed

        if class_head(self.model) is None or not self.spec.classes:
            return self.logits(image), {}
        self.model.eval().to(self.device)
        logits, probs = windowed(self.model, image, self.window)
        return logits, {name: round(float(p), 4) for name, p in zip(self.spec.classes, probs)}

    def predict(self, image: str | Path | tuple[np.ndarray, np.ndarray]) -> Prediction:
        """Masks for a NIfTI file, or for ``(array, RAS affine)``, on that image's own grid."""
        if isinstance(image, (str, Path)):
            data = self.from_file({"image": str(image)})
        else:
            if self.spec.n_channels > 1:
                raise InputError(f"the model takes {self.spec.n_channels} co-registered channels "
                                 f"({', '.join(self.spec.channels)}); a DICOM series is one: give a 4-D NIfTI "
                                 "with the channels last")
            array, affine = image
            data = self.from_array({"image": MetaTensor(torch.as_tensor(np.asarray(array, dtype=np.float32)),
                                                        affine=torch.as_tensor(affine, dtype=torch.float64))})
        logits, classes = self.logits_and_classes(data["image"])
        probs = torch.softmax(logits, dim=0)
        data["pred"] = MetaTensor(probs, meta=dict(data["image"].meta))  # the preprocessed grid's meta
        inverted = Invertd(keys="pred", transform=self.from_file if isinstance(image, (str, Path)) else self.from_array,
                           orig_keys="image", nearest_interp=False, to_tensor=True)(data)["pred"]
        mask = channel_argmax(inverted.as_tensor() if isinstance(inverted, MetaTensor) else inverted)
        return Prediction(mask=mask, affine=np.asarray(inverted.affine, dtype=np.float64), classes=classes)


def channel_argmax(probs: torch.Tensor) -> np.ndarray:
    """``argmax`` over the channel axis as uint8 labels (the first channel wins ties, like
    ``torch.argmax``), by one elementwise pass per channel: on a large inverted volume, whose
    memory layout is permuted by the orientation inverse, ``torch.argmax(dim=0)`` is ~20x slower."""
    best, labels = probs[0].clone(), torch.zeros(probs.shape[1:], dtype=torch.uint8)
    for c in range(1, probs.shape[0]):
        better = probs[c] > best
        labels[better] = c
        torch.maximum(best, probs[c], out=best)
    return labels.numpy()


def evaluate_native(predictor: Predictor, items: Iterable[dict], description: str = "",
                    key: str = "") -> tuple[CaseMetrics, list[tuple]]:
    """Per-case Dice and HD95 (mm) of ``predictor`` on labelled manifest ``items``, each on the
    image's own grid (labels as ingested, never resampled); also (case, image, label, mask,
    affine) of the first three cases, for the overlays."""
    items = list(items)
    ids, dice, hd95, shown, class_dice, class_hd95, probabilities = [], [], [], [], [], [], []
    for item in track(items, key or f"eval:{description}", description, unit="cases"):
        pred = predictor.predict(item["image"])
        label_img = nib.load(item["label"])
        label = np.rint(np.asanyarray(label_img.dataobj)).astype(np.int64)
        if label.shape != pred.mask.shape:
            raise ValueError(f"case {item['case_id']}: prediction {pred.mask.shape} and label {label.shape} differ")
        d, h = case_scores(pred.mask, label, predictor.spec.n_classes, voxel_spacing(label_img.affine))
        ids.append(item["case_id"])
        dice.append(sum(d) / len(d))
        hd95.append(sum(h) / len(h))
        class_dice.append(d)
        class_hd95.append(h)
        probabilities.append(pred.classes)
        if len(shown) < 3:
            image = np.asanyarray(nib.load(item["image"]).dataobj, dtype=np.float32)
            shown.append((item["case_id"], image[..., 0] if image.ndim == 4 else image,  # first channel
                          label, pred.mask, label_img.affine))
    classes = [name for value, name in sorted(predictor.spec.labels.items(), key=lambda kv: int(kv[0])) if value != "0"]
    return CaseMetrics(case_ids=ids, dice=dice, hd95=hd95, classes=classes, class_dice=class_dice,
                       class_hd95=class_hd95, case_classes=probabilities), shown
