"""A self-contained model: everything needed to apply it to a new image, in one folder.

A *model package* (``tl_med.model/1``) is a folder with two files:

* ``tlmed-model.json``: the :class:`ModelSpec`: the network definition (MONAI class and
  arguments), the preprocessing (spacing, intensity normalisation, the harmonisation landmarks
  when that step ran), the sliding-window settings, the label map, the expected modality, the task
  and site it was trained for, and the versions it was made with;
* ``model.pt``: the weights, a plain state dict (loads with ``weights_only=True``).

Every pretraining and adaptation run logs its package as the artifact folder ``package/``, so a
registered version (``models:/tlmed-<task>-<site>@champion``) can be applied with neither
``sites.yaml`` nor a workspace (:mod:`tl_med.predict`), and exported as a MONAI bundle
(:mod:`tl_med.export`).

Example:
    >>> from tl_med.config import PipelineConfig
    >>> spec = ModelSpec.from_config(PipelineConfig.profile("tiny"), task="liver", site="east",
    ...                              modality="CT", labels={"0": "background", "1": "liver"})
    >>> spec.n_classes
    2
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from tl_med.config import FrozenModel, InferenceConfig, NetworkConfig, PipelineConfig, PreprocessConfig
from tl_med.errors import InputError

__all__ = ["ModelSpec", "save_package", "load_package", "SPEC_FILE", "WEIGHTS_FILE", "PACKAGE_FORMAT"]

PACKAGE_FORMAT = "tl_med.model/1"
SPEC_FILE = "tlmed-model.json"
WEIGHTS_FILE = "model.pt"


class ModelSpec(FrozenModel):
    """What a trained network needs beside its weights to be applied to an image as acquired."""

    format: Literal["tl_med.model/1"] = PACKAGE_FORMAT
    task: str
    site: str
    modality: str  # "CT", "MR" (what the model was trained on; "/"-joined when mixed)
    labels: dict[str, str]  # label value -> name, "0" is background
    channels: tuple[str, ...] = ()  # names of the input channels of a multi-channel task, in order
    classes: tuple[str, ...] = ()  # case-level classes of a multi-task model's class head (tl_med.multitask)
    network: NetworkConfig
    preprocess: PreprocessConfig
    inference: InferenceConfig = InferenceConfig()
    landmarks: tuple[float, ...] | None = None  # histogram-standardisation targets (harmonise step)
    versions: dict[str, str] = {}

    @property
    def n_classes(self) -> int:
        return self.network.out_channels

    @property
    def n_channels(self) -> int:
        return self.network.in_channels

    @classmethod
    def from_config(cls, cfg: PipelineConfig, *, task: str, site: str, modality: str, labels: dict[str, str],
                    landmarks: tuple[float, ...] | None = None, channels: tuple[str, ...] = ()) -> "ModelSpec":
        """The spec of ``cfg``'s network fitted to the task: one input per channel, one output
        per label value. A bundle's own network must already fit (:class:`InputError` if not)."""
        import monai

        import tl_med

        fitted = {"in_channels": max(1, len(channels)), "out_channels": len(labels)}
        if cfg.network.name == "bundle":
            own = {k: (cfg.network.definition or {}).get(k) for k in fitted}
            wrong = [f"{k} {own[k]} (the task needs {v})" for k, v in fitted.items() if own[k] not in (None, v)]
            if wrong:
                raise InputError(f"bundle network {cfg.network.bundle}: {', '.join(wrong)}")
        network = cfg.network.model_copy(update=fitted)
        return cls(task=task, site=site, modality=modality, labels=labels, channels=tuple(channels), network=network,
                   preprocess=cfg.preprocess, inference=cfg.inference,
                   landmarks=tuple(landmarks) if landmarks else None,
                   versions={"tl_med": tl_med.__version__, "monai": monai.__version__,
                             "torch": torch.__version__.split("+")[0]})

    def modalities(self) -> set[str]:
        return set(self.modality.split("/"))


def save_package(folder: Path, model: torch.nn.Module, spec: ModelSpec) -> Path:
    """Write ``spec`` and ``model``'s weights into ``folder``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SPEC_FILE).write_text(spec.model_dump_json(indent=2) + "\n")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, folder / WEIGHTS_FILE)
    return folder


def load_package(folder: Path) -> tuple[torch.nn.Module, ModelSpec]:
    """The network (weights loaded, eval mode, on CPU) and spec of a package folder."""
    from tl_med.models.zoo import build_network

    spec_path, weights = folder / SPEC_FILE, folder / WEIGHTS_FILE
    if not spec_path.is_file() or not weights.is_file():
        raise InputError(f"{folder}: not a tl_med model package (needs {SPEC_FILE} and {WEIGHTS_FILE})")
    try:
        spec = ModelSpec.model_validate_json(spec_path.read_text())
    except ValueError as exc:
        raise InputError(f"{spec_path}: not a valid model spec ({str(exc).splitlines()[0]})") from None
    model = build_network(spec.network)
    if spec.classes:
        from tl_med.multitask import attach_class_head

        attach_class_head(model, len(spec.classes))
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"{weights}: the weights do not fit the network in {SPEC_FILE} "
                         f"({str(exc).splitlines()[0][:120]})") from None
    return model.eval(), spec
