"""How good is a segmentation model on a site, without labels? An estimate for the reviewer.

With no target labels there is no Dice. :func:`estimate_quality` looks at the model's predictions
on a site's images and reports three label-free signals, each known to fall with Dice under
domain shift:

* ``agreement``: mean foreground Dice between the prediction and the predictions for the image
  flipped along each axis (test-time augmentation; flipped back before comparing);
* ``entropy``: mean predictive entropy (normalised to [0, 1]) in the voxels where any foreground
  class has probability above 0.1, i.e. around what the model thinks it sees;
* ``volume_z``: median z-score of the predicted foreground volume against the source site's
  label volumes (a model that finds half a liver, or none, is off by several sd).

``estimated_dice`` is the agreement, zeroed when the median volume is more than 3 sd off: a
model can agree with itself about nothing. It is an estimate, shown as such; ``benchmarks/
label_efficiency.py`` reports its rank correlation with the true Dice over its runs.

Example:
    >>> # q = estimate_quality(Predictor(model, spec, device), unlabelled_items, source_volumes)
    >>> # q.summary()["estimated_dice"]
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import torch

from tl_med.inference import Predictor, voxel_spacing

__all__ = ["QualityEstimate", "estimate_quality", "label_volumes_ml"]

_FOREGROUND_P = 0.1
_VOLUME_SD_LIMIT = 3.0


@dataclass(frozen=True)
class QualityEstimate:
    """Per-case label-free signals (see the module docstring) and their summary."""

    case_ids: list[str]
    agreement: list[float]
    entropy: list[float]
    volume_z: list[float]

    def summary(self) -> dict[str, float]:
        if not self.case_ids:
            return {"n_cases": 0.0}
        agreement, volume_z = statistics.mean(self.agreement), statistics.median(self.volume_z)
        return {"n_cases": float(len(self.case_ids)), "agreement": agreement,
                "entropy": statistics.mean(self.entropy), "volume_z": volume_z,
                "estimated_dice": 0.0 if abs(volume_z) > _VOLUME_SD_LIMIT else agreement}  # nan > 3 is False


def label_volumes_ml(items: Iterable[dict]) -> tuple[float, float]:
    """Mean and sd (mL) of the foreground volume of labelled items (the source's training labels)."""
    volumes = []
    for item in items:
        img = nib.load(item["label"])
        voxel_ml = float(np.prod(voxel_spacing(img.affine))) / 1000.0
        volumes.append(float((np.asanyarray(img.dataobj) > 0).sum()) * voxel_ml)
    if len(volumes) < 2:
        raise ValueError("label_volumes_ml needs at least two labelled cases")
    return statistics.mean(volumes), statistics.stdev(volumes)


def _foreground(probs: torch.Tensor) -> torch.Tensor:
    return probs.argmax(dim=0) > 0


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    """Foreground Dice; 0 when both are empty: every case is expected to hold the organ (as every
    source label does), so agreeing about nothing is no evidence of quality."""
    total = int(a.sum()) + int(b.sum())
    return 0.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def estimate_quality(predictor: Predictor, items: Iterable[dict],
                     source_volumes_ml: tuple[float, float] | None) -> QualityEstimate:
    """Label-free quality signals of ``predictor`` on ``items`` (their labels, if any, are not
    read); without ``source_volumes_ml`` the volume check is left out (``volume_z`` NaN)."""
    ids, agreement, entropy, volume_z = [], [], [], []
    mean_ml, sd_ml = source_volumes_ml or (math.nan, math.nan)
    voxel_ml = float(np.prod(predictor.spec.preprocess.spacing)) / 1000.0
    for item in items:
        image = predictor.from_file({"image": item["image"]})["image"]
        probs = torch.softmax(predictor.logits(image), dim=0)
        mask = _foreground(probs)
        flips = [torch.softmax(predictor.logits(image.flip(axis)), dim=0).flip(axis)
                 for axis in range(1, image.ndim)]
        agreement.append(statistics.mean(_dice(mask, _foreground(p)) for p in flips))
        near = probs[1:].max(dim=0).values > _FOREGROUND_P
        h = -(probs * probs.clamp_min(1e-8).log()).sum(dim=0) / math.log(probs.shape[0])
        entropy.append(float(h[near].mean()) if bool(near.any()) else 0.0)
        volume_z.append((float(mask.sum()) * voxel_ml - mean_ml) / (max(sd_ml, 1e-6) if sd_ml == sd_ml else sd_ml))
        ids.append(item["case_id"])
    return QualityEstimate(ids, agreement, entropy, volume_z)
