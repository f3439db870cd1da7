"""Case-level classification: the data, the training loop and the predictions of a classifier.

A case is its whole preprocessed image (the same cached MONAI chain as segmentation: RAS,
resampled to the model's spacing, normalised), centre-cropped or padded to
``classifier.input_size``, so physical sizes are kept (a class such as "enlarged organ" depends on
them). Cases without a class are left out.

:func:`fit_classifier` trains with cross-entropy; a strategy (:mod:`tl_med.adapt.strategies`)
decides which layers train and how fast, exactly as for segmentation, through the optimizer's
parameter groups and its epoch hook. There is no validation-based selection: with a handful of
labelled cases a validation split is too small to choose by, so the last epoch is kept.

Example:
    >>> # loader = class_loader(items, cfg, ws.cache, train=True, seed=0)
    >>> # history = fit_classifier(model, loader, optimizer, epochs=30, device=torch.device("cpu"))
    >>> # case_ids, y, probs = predict_probabilities(model, class_loader(test, cfg, ws.cache, train=False))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, EnsureTyped, ResizeWithPadOrCropd

from tl_med.adapt.strategies import Strategy
from tl_med.config import PipelineConfig
from tl_med.data.transforms import cached_dataset

__all__ = ["with_class", "class_loader", "fit_classifier", "predict_probabilities", "ClassEpoch"]


@dataclass(frozen=True)
class ClassEpoch:
    epoch: int
    train_loss: float


def with_class(items: list[dict]) -> list[dict]:
    """The items that have a case-level class."""
    return [it for it in items if int(it.get("class", -1)) >= 0]


def class_loader(items: list[dict], cfg: PipelineConfig, cache_root, *, train: bool, seed: int = 0,
                 batch_size: int | None = None) -> DataLoader:
    """Batches of ``{"image", "class", "case_id"}``: each whole preprocessed image (cached on disk),
    centre-cropped/padded to ``cfg.classifier.input_size``; ``train`` shuffles (seeded) and augments.
    Batches hold ``batch_size`` cases (default: the classifier's when training, else one)."""
    c = cfg.classifier
    size = batch_size or (c.batch_size if train else 1)
    if train and len(items) == 1:
        items = items * 2  # batch norm needs two cases in a training batch: two augmentations of one
    cached = cached_dataset(items, cfg.preprocess, cache_root, augment=c.augment if train else "none")
    fit = Compose([ResizeWithPadOrCropd(keys="image", spatial_size=c.input_size, mode="edge"),
                   EnsureTyped(keys="image", track_meta=False)])
    ds = Dataset(data=_Picked(cached), transform=fit)
    gen = torch.Generator().manual_seed(seed)
    # a last batch of one case is dropped where batches are meant to have several (training, AdaBN):
    # it has no batch statistics (training shuffles, so it comes up in another epoch)
    return DataLoader(ds, batch_size=size, shuffle=train, num_workers=0, generator=gen,
                      drop_last=size > 1 and len(items) % size == 1)


class _Picked(torch.utils.data.Dataset):
    """The keys a classifier reads from each cached item: image, class (-1: none) and case id."""

    def __init__(self, data: torch.utils.data.Dataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        item = self.data[i]
        return {"image": item["image"], "class": int(item.get("class", -1)), "case_id": item["case_id"]}


def fit_classifier(model: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, *, epochs: int,
                   device: torch.device, strategy: Strategy | None = None,
                   on_epoch: Callable[[ClassEpoch], None] | None = None) -> list[ClassEpoch]:
    """Train ``model`` on ``loader`` with cross-entropy for ``epochs``; the per-epoch mean loss."""
    loss_fn = torch.nn.CrossEntropyLoss()
    model.to(device)
    history = []
    for epoch in range(epochs):
        if strategy is not None:
            strategy.on_epoch_start(epoch, model)
        model.train()
        total, steps = 0.0, 0
        for batch in loader:
            image, target = batch["image"].to(device), batch["class"].to(device).long()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(image), target)
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
        history.append(ClassEpoch(epoch, total / max(steps, 1)))
        if on_epoch is not None:
            on_epoch(history[-1])
    return history


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, loader: DataLoader,
                          device: torch.device | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Case ids, true classes and softmax probabilities (cases × classes) of every case in ``loader``."""
    device = device or next(model.parameters()).device
    model.to(device).eval()
    ids: list[str] = []
    ys: list[int] = []
    probs: list[np.ndarray] = []
    for batch in loader:
        out = torch.softmax(model(batch["image"].to(device)).float(), dim=1).cpu().numpy()
        probs.extend(out)
        ys.extend(int(v) for v in batch["class"])
        ids.extend(batch["case_id"])
    return ids, np.asarray(ys, dtype=int), np.asarray(probs, dtype=float).reshape(len(ys), -1)
