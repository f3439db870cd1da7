"""Compose one adaptation: strategy + regularisers + domain-adaptation steps, on one model.

:func:`adapt_model` is the whole recipe the config describes, in a fixed order::

    [harmonise] → [inpainting] → train (strategy; + L2-SP/EWC; + CORAL; + mean teacher) → [self-training round]
    → [AdaBN] → [TENT] → [consistency TTA]

It knows nothing about MLflow or Prefect: data come in as item lists and a loader factory, and
progress goes out through ``on_epoch``.

Example:
    >>> # outcome = adapt_model(model, pretrained_state, cfg.adapt, data, loaders, device, infer=window)
    >>> # outcome.info["steps"] -> ["harmonise", "adabn"]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import nibabel as nib
import numpy as np
import torch
from monai.data import DataLoader

from tl_med.adapt.consistency import consistency_tta
from tl_med.adapt.inpainting import inpaint
from tl_med.adapt.mean_teacher import MeanTeacherLoss
from tl_med.adapt.regularisers import EWC, L2SP, fisher_diagonal
from tl_med.adapt.strategies import build_strategy
from tl_med.adapt.uda import CoralLoss, adabn, pseudo_labels, tent
from tl_med.catalogue import STEPS, untrained
from tl_med.checkpoint import Checkpoint
from tl_med.config import AdaptConfig
from tl_med.data.harmonise import fit_landmarks
from tl_med.evaluate import Infer
from tl_med.train import EpochLog, FitResult, fit

__all__ = ["AdaptData", "AdaptOutcome", "Loaders", "adapt_model", "source_landmarks"]


@dataclass(frozen=True)
class AdaptData:
    """Item lists (MONAI datalist dicts) an adaptation may use. ``unlabelled`` never includes the
    target test split; ``source_train`` is the source site's labelled training split."""

    labelled: list[dict]
    validation: list[dict]
    unlabelled: list[dict]
    source_train: list[dict]


class Loaders(Protocol):
    """Builds a DataLoader over items; ``harmonised`` applies the source landmarks (if any)."""

    def __call__(self, items: list[dict], *, train: bool, batch_size: int = 1,
                 landmarks: tuple[float, ...] | None = None, extra: list[dict] | None = None,
                 patches: bool | None = None) -> DataLoader:
        ...


@dataclass
class AdaptOutcome:
    """What the adaptation did: the fit history, the landmarks used for target data, and facts
    for the tracker (``info``)."""

    fit: FitResult | None
    landmarks: tuple[float, ...] | None
    info: dict[str, Any] = field(default_factory=dict)


def _target_images(data: AdaptData) -> list[dict]:
    """Every target image the steps may look at: unlabelled ones and the labelled training images
    (labels dropped), each once. Never the test split."""
    seen: dict[str, dict] = {}
    for item in data.unlabelled + [{k: v for k, v in it.items() if k != "label"} for it in data.labelled]:
        seen.setdefault(item["case_id"], item)
    return list(seen.values())


def source_landmarks(items: list[dict]) -> tuple[float, ...]:
    """Histogram landmarks of the source images, read raw (physical units) from their NIfTI files."""
    return fit_landmarks(np.asanyarray(nib.load(it["image"]).dataobj, dtype=np.float32) for it in items)


def _extra_losses(model: torch.nn.Module, state: dict[str, torch.Tensor], cfg: AdaptConfig, data: AdaptData,
                  loaders: Loaders, device: torch.device, landmarks: tuple[float, ...] | None,
                  info: dict[str, Any]) -> list[Callable[[torch.nn.Module], torch.Tensor]]:
    losses: list[Callable[[torch.nn.Module], torch.Tensor]] = []
    reference = {k: v for k, v in state.items() if k in dict(model.named_parameters())}
    if cfg.l2sp > 0:
        losses.append(L2SP(reference, cfg.l2sp))
    if cfg.ewc > 0:
        fisher = fisher_diagonal(model, loaders(data.source_train, train=False, patches=True), device)
        losses.append(EWC(reference, fisher, cfg.ewc))
        info["ewc_fisher_batches"] = len(data.source_train)
    if "mean_teacher" in cfg.steps:  # before CORAL hooks the student: the teacher is a copy without hooks
        images = _target_images(data)
        if not images:
            raise ValueError("mean_teacher needs target images")
        losses.append(MeanTeacherLoss(model, loaders(images, train=True, batch_size=cfg.batch_size,
                                                     landmarks=landmarks), device, cfg.consistency_weight,
                                      ema=cfg.teacher_ema))
    if "coral" in cfg.steps:
        images = _target_images(data)
        if not images:
            raise ValueError("coral needs target images")
        # first in the list: it reads the labelled batch's features before the mean teacher's student
        # forward pass (which runs through the same hook) overwrites them
        losses.insert(0, CoralLoss(model, loaders(images, train=True, batch_size=cfg.batch_size,
                                                  landmarks=landmarks), device, cfg.coral_weight))
    return losses


def adapt_model(model: torch.nn.Module, state: dict[str, torch.Tensor], cfg: AdaptConfig, data: AdaptData,
                loaders: Loaders, device: torch.device, *, infer: Infer,
                on_epoch: Callable[[EpochLog], None] | None = None,
                checkpoints: Path | None = None) -> AdaptOutcome:
    """Adapt ``model`` (already holding the pretrained ``state``) to the target site, in place.

    With ``checkpoints`` (a folder), each training loop saves a checkpoint per epoch there and a
    rerun resumes from it (the self-training round repeats its deterministic pseudo-labelling).
    CORAL's target batches restart from the first on resume, so that step resumes without the
    bit-for-bit guarantee. ``infer`` predicts whole images (validation, pseudo-labels): a sliding
    window of the training patch size.
    """
    info: dict[str, Any] = {"strategy": cfg.strategy, "steps": list(cfg.steps),
                            "n_labelled": len(data.labelled), "n_unlabelled": len(data.unlabelled)}
    landmarks = source_landmarks(data.source_train) if "harmonise" in cfg.steps else None
    strategy = build_strategy(cfg)
    # CORAL and the mean teacher train on the source labels too, so they work with zero target labels
    on_source = any(STEPS[s].trains_on_source for s in cfg.steps)
    train_items = data.labelled + (data.source_train if on_source else [])
    if lonely := untrained(cfg.steps, len(data.labelled)):
        raise ValueError(f"{', '.join(lonely)} needs supervised training after it, and this site has no labelled "
                         "target case: add a step that trains on the source's labels (coral, mean_teacher)")
    # before the mean teacher copies the student (EWC's Fisher is then read at the inpainted weights)
    if "inpainting" in cfg.steps:
        images = _target_images(data)
        if not images:
            raise ValueError("inpainting needs target images")
        history = inpaint(model, loaders(images, train=True, batch_size=cfg.batch_size, landmarks=landmarks), device,
                          steps=cfg.inpainting_steps, lr=cfg.lr)
        info["inpainting_loss_first_last"] = [history[0], history[-1]]
    losses = _extra_losses(model, state, cfg, data, loaders, device, landmarks, info)
    validation = loaders(data.validation, train=False, landmarks=landmarks) if data.labelled else None
    result = None

    def train(epochs: int, extra: list[dict] | None = None, phase: str = "train") -> FitResult:
        optimizer = torch.optim.AdamW(strategy.param_groups(model), lr=cfg.lr, weight_decay=cfg.weight_decay)
        return fit(model, loaders(train_items, train=True, batch_size=cfg.batch_size, landmarks=landmarks,
                                  extra=extra),
                   validation, optimizer, epochs=epochs, device=device,
                   before_epoch=lambda e: strategy.on_epoch_start(e, model), on_epoch=on_epoch,
                   extra_losses=losses, infer=infer, loop=cfg,
                   checkpoint=Checkpoint(checkpoints / f"{phase}.pt") if checkpoints is not None else None)

    try:
        if train_items:
            result = train(cfg.epochs)
        if "self_training" in cfg.steps:
            pseudo = pseudo_labels(model, loaders(data.unlabelled, train=False, landmarks=landmarks), device,
                                   cfg.pseudo_threshold, infer=infer)
            info["pseudo_labelled"] = len(pseudo)
            if pseudo:
                result = train(max(1, cfg.epochs // 2), extra=pseudo, phase="self_training")
    finally:
        for loss in losses:
            if isinstance(loss, CoralLoss):
                loss.close()
    if "adabn" in cfg.steps:
        info["adabn_layers"] = adabn(model, loaders(_target_images(data), train=False, batch_size=cfg.batch_size,
                                                    landmarks=landmarks, patches=True), device)
    if "tent" in cfg.steps:
        entropy = tent(model, loaders(_target_images(data), train=True, batch_size=cfg.batch_size,
                                      landmarks=landmarks), device, steps=cfg.tent_steps, lr=cfg.tent_lr)
        info["tent_entropy_first_last"] = [entropy[0], entropy[-1]]
    if "consistency_tta" in cfg.steps:
        agreement = consistency_tta(model, loaders(_target_images(data), train=True, batch_size=cfg.batch_size,
                                                   landmarks=landmarks), device, steps=cfg.tent_steps, lr=cfg.tent_lr)
        info["consistency_tta_loss_first_last"] = [agreement[0], agreement[-1]]
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return AdaptOutcome(result, landmarks, info)
