"""DataLoaders over manifest items: the cached MONAI preprocessing, optional harmonisation, and
extra already-preprocessed items (pseudo-labels). One factory serves training, evaluation and the
adaptation steps, so every path preprocesses the same way.

Example:
    >>> # make = loader_factory(ws.cache, cfg.preprocess, seed=0, augment=True)
    >>> # train = make(items, train=True, batch_size=2)
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.data import DataLoader
from torch.utils.data import ConcatDataset

from tl_med.config import PreprocessConfig
from tl_med.data.transforms import cached_dataset

__all__ = ["loader_factory"]


def loader_factory(cache_root: Path, preprocess: PreprocessConfig, *, seed: int, augment: bool = True):
    """A function ``make(items, *, train, batch_size=1, landmarks=None, extra=None) -> DataLoader``.

    ``train`` shuffles (with a seeded generator) and augments; ``landmarks`` harmonises images to
    the source; ``extra`` items are appended as they are.
    """

    def make(items: list[dict], *, train: bool, batch_size: int = 1, landmarks: tuple[float, ...] | None = None,
             extra: list[dict] | None = None) -> DataLoader:
        ds = cached_dataset(items, preprocess, cache_root, augment=train and augment, landmarks=landmarks)
        if extra:
            ds = ConcatDataset([ds, [{**e, "label": e["label"].float(), "content": ""} for e in extra]])
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(ds, batch_size=batch_size, shuffle=train, num_workers=0, generator=gen)

    return make
