"""DataLoaders over manifest items: the cached MONAI preprocessing, optional harmonisation, random
patches for training, and extra already-preprocessed items (pseudo-labels). One factory serves
training, evaluation and the adaptation steps, so every path preprocesses the same way.

Example:
    >>> # make = loader_factory(ws.cache, cfg.preprocess, seed=0, augment="intensity")
    >>> # train = make(items, train=True, batch_size=2)        # random patches, augmented
    >>> # whole = make(items, train=False)                      # whole images, one per batch
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, EnsureTyped
from torch.utils.data import ConcatDataset

from tl_med.config import PreprocessConfig
from tl_med.data.transforms import KEYS, augmentation, cached_dataset, patches

__all__ = ["loader_factory"]


def _extra_dataset(extra: list[dict], cfg: PreprocessConfig, augment: str, sample_patches: bool) -> Dataset:
    """Already-preprocessed whole images with labels (pseudo-labels), patched and augmented like the rest."""
    chain = (patches(cfg, labelled=True) if sample_patches else []) + augmentation(augment)
    chain.append(EnsureTyped(keys=KEYS, allow_missing_keys=True, track_meta=False))
    items = [{**e, "label": e["label"].float(), "content": ""} for e in extra]
    return Dataset(items, transform=Compose(chain))


def loader_factory(cache_root: Path, preprocess: PreprocessConfig, *, seed: int, augment: str = "intensity"):
    """A function ``make(items, *, train, batch_size=1, landmarks=None, extra=None, patches=None)``.

    ``train`` shuffles (with a seeded generator), augments (``augment``: none, intensity or
    contrast; see :func:`tl_med.data.transforms.augmentation`) and samples random patches; without it
    whole images come one per batch (their sizes differ). ``patches=True`` samples patches without
    training (fixed-size inputs for steps that see unlabelled images); ``landmarks`` harmonises
    images to the source; ``extra`` items are appended after the same patching and augmentation.
    """

    def make(items: list[dict], *, train: bool, batch_size: int = 1, landmarks: tuple[float, ...] | None = None,
             extra: list[dict] | None = None, patches: bool | None = None) -> DataLoader:
        sample = train if patches is None else patches
        kind = augment if train else "none"
        if any("class" in it for it in [*items, *(extra or [])]):  # every item the same keys: -1 is no class
            items = [{**it, "class": it.get("class", -1)} for it in items]
            extra = [{**e, "class": e.get("class", -1)} for e in extra or []]
        ds = cached_dataset(items, preprocess, cache_root, augment=kind, landmarks=landmarks, sample_patches=sample)
        if extra:
            ds = ConcatDataset([ds, _extra_dataset(extra, preprocess, kind, sample)])
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(ds, batch_size=batch_size if sample else 1, shuffle=train, num_workers=0, generator=gen)

    return make
