"""MONAI transform chains: the deterministic preprocessing (cached on disk) and training augmentation.

Example:
    >>> from tl_med.config import PreprocessConfig
    >>> chain = preprocessing(PreprocessConfig())
    >>> type(chain[0]).__name__
    'LoadImaged'
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from monai.data import PersistentDataset
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ResizeWithPadOrCropd,
    ScaleIntensityRangePercentilesd,
    Spacingd,
)

from tl_med.config import PreprocessConfig
from tl_med.data.harmonise import HarmoniseToSourced

__all__ = ["preprocessing", "augmentation", "cached_dataset", "cache_dir_for", "cache_file", "preprocess_item"]

KEYS = ("image", "label")
# NIfTI's RAS+ world axes, stated explicitly (the default is about to follow the tensor's space)
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def preprocessing(cfg: PreprocessConfig, landmarks: tuple[float, ...] | None = None) -> list:
    """Load → channel-first → [harmonise to the source] → RAS → resample to ``cfg.spacing`` →
    normalise → pad/crop to size."""
    intensity = (NormalizeIntensityd(keys="image") if cfg.intensity == "zscore"
                 else ScaleIntensityRangePercentilesd(keys="image", lower=1, upper=99, b_min=0.0,
                                                      b_max=1.0, clip=True))
    return [
        # ingest writes NIfTI: pin nibabel (no DICOM reader probing, same result everywhere)
        LoadImaged(keys=KEYS, reader="NibabelReader", allow_missing_keys=True, image_only=True),
        EnsureChannelFirstd(keys=KEYS, allow_missing_keys=True),
        *([HarmoniseToSourced(keys="image", landmarks=landmarks)] if landmarks else []),
        Orientationd(keys=KEYS, axcodes="RAS", labels=RAS_LABELS, allow_missing_keys=True),
        Spacingd(keys=KEYS, pixdim=cfg.spacing, mode=("bilinear", "nearest"), allow_missing_keys=True),
        intensity,
        ResizeWithPadOrCropd(keys=KEYS, spatial_size=cfg.spatial_size, allow_missing_keys=True),
        EnsureTyped(keys=KEYS, allow_missing_keys=True, track_meta=False),
    ]


def augmentation() -> list:
    """Light intensity augmentation for training (geometry is left alone: location is a prior)."""
    return [
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        RandGaussianNoised(keys="image", std=0.05, prob=0.3),
    ]


def cache_dir_for(cfg: PreprocessConfig, cache_root: Path, landmarks: tuple[float, ...] | None = None) -> Path:
    """One cache folder per preprocessing config (and harmonisation landmarks), so a change never
    reads stale tensors."""
    key = {"cfg": cfg.model_dump(mode="json"), **({"landmarks": [round(v, 6) for v in landmarks]}
                                                  if landmarks else {})}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_root / f"preprocess-{digest[:12]}"


def cached_dataset(items: list[dict], cfg: PreprocessConfig, cache_root: Path,
                   augment: bool = False, landmarks: tuple[float, ...] | None = None) -> PersistentDataset:
    """A ``PersistentDataset`` whose deterministic prefix is cached on disk under ``cache_root``.

    Items carry ``content`` (sha256 of image and label), which is part of MONAI's cache key: new content, new cache entry.
    """
    # augmentation re-wraps tensors as MetaTensors: end with plain tensors so that every item
    # (cached, augmented or pseudo-labelled) collates the same way
    chain = preprocessing(cfg, landmarks) + (augmentation() + [EnsureTyped(keys=KEYS, allow_missing_keys=True,
                                                                          track_meta=False)] if augment else [])
    return PersistentDataset(data=items, transform=Compose(chain), cache_dir=cache_dir_for(cfg, cache_root, landmarks))


def cache_file(item: dict, cfg: PreprocessConfig, cache_root: Path) -> Path:
    """Where :func:`cached_dataset` keeps ``item``'s preprocessed tensors (MONAI's own naming)."""
    ds = cached_dataset([item], cfg, cache_root)
    return Path(ds.cache_dir) / f"{ds.hash_func(item).decode('utf-8')}{ds.transform_hash}.pt"


def preprocess_item(item: dict, cfg: PreprocessConfig, cache_root: Path) -> Path:
    """Run the deterministic preprocessing of one case into the cache (a no-op when cached)."""
    ds = cached_dataset([item], cfg, cache_root)
    ds[0]
    return cache_file(item, cfg, cache_root)
