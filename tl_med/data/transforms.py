"""MONAI transform chains: the deterministic preprocessing (cached on disk), patch sampling and
augmentation for training, and the inference chain that :class:`~monai.transforms.Invertd` undoes.

The preprocessing keeps the whole image (reoriented to RAS, resampled to the model's spacing,
intensity-normalised). Training draws random patches from it (``RandCropByPosNegLabeld``: half
centred on foreground, half anywhere; ``RandSpatialCropd`` for images without labels); evaluation
and inference slide a window of the same size over the whole image.

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
    RandCropByPosNegLabeld,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    ScaleIntensityRangePercentilesd,
    Spacingd,
    SpatialPadd,
)

from tl_med.config import PreprocessConfig
from tl_med.data.harmonise import HarmoniseToSourced

__all__ = ["preprocessing", "intensity", "patches", "augmentation", "cached_dataset", "cache_dir_for", "cache_file",
           "preprocess_item", "RAS_LABELS", "KEYS"]

KEYS = ("image", "label")
# NIfTI's RAS+ world axes, stated explicitly (the default is about to follow the tensor's space)
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def intensity(cfg: PreprocessConfig, key: str = "image"):
    """The intensity normalisation of ``cfg`` (z-score over the image, or 1st-99th percentile to
    [0, 1]), each channel on its own (the sequences of a multi-channel case have unrelated scales)."""
    if cfg.intensity == "zscore":
        return NormalizeIntensityd(keys=key, channel_wise=True)
    return ScaleIntensityRangePercentilesd(keys=key, lower=1, upper=99, b_min=0.0, b_max=1.0, clip=True,
                                           channel_wise=True)


def preprocessing(cfg: PreprocessConfig, landmarks: tuple[float, ...] | None = None, *,
                  keys: tuple[str, ...] = KEYS, track_meta: bool = False) -> list:
    """Load → channel-first → [harmonise to the source] → RAS → resample to ``cfg.spacing`` →
    normalise. The whole image is kept. ``track_meta`` keeps the MetaTensor history that
    ``Invertd`` needs to put a prediction back on the input's grid."""
    label = "label" in keys
    return [
        # ingest writes NIfTI: pin nibabel (no DICOM reader probing, same result everywhere)
        LoadImaged(keys=keys, reader="NibabelReader", allow_missing_keys=True, image_only=True),
        EnsureChannelFirstd(keys=keys, allow_missing_keys=True),
        *([HarmoniseToSourced(keys="image", landmarks=landmarks)] if landmarks else []),
        Orientationd(keys=keys, axcodes="RAS", labels=RAS_LABELS, allow_missing_keys=True),
        Spacingd(keys=keys, pixdim=cfg.spacing, mode=("bilinear", "nearest") if label else "bilinear",
                 allow_missing_keys=True),
        intensity(cfg),
        EnsureTyped(keys=keys, allow_missing_keys=True, track_meta=track_meta),
    ]


def patches(cfg: PreprocessConfig, labelled: bool) -> list:
    """Random training patches of ``cfg.patch_size``: foreground-centred or anywhere in equal
    measure when there is a label, anywhere otherwise. An image smaller than a patch is padded
    after the crop by repeating its edge (as the sliding window pads at inference), so the cached
    whole image stays unpadded."""
    keys = list(KEYS) if labelled else ["image"]
    pad = SpatialPadd(keys=keys, spatial_size=cfg.patch_size, mode=("edge", "constant")[:len(keys)])
    if labelled:
        return [RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=cfg.patch_size, pos=1, neg=1,
                                       num_samples=cfg.patches_per_volume, allow_smaller=True), pad]
    return [RandSpatialCropd(keys=keys, roi_size=cfg.patch_size, random_size=False), pad]


def augmentation(kind: str = "intensity") -> list:
    """Training augmentation: ``none``; ``intensity`` (light scale, shift, noise); ``contrast``
    (those plus :func:`tl_med.data.contrast.contrast_augmentation`)."""
    if kind == "none":
        return []
    light = [
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        RandGaussianNoised(keys="image", std=0.05, prob=0.3),
    ]
    if kind == "contrast":
        from tl_med.data.contrast import contrast_augmentation

        return contrast_augmentation() + light
    return light


def cache_dir_for(cfg: PreprocessConfig, cache_root: Path, landmarks: tuple[float, ...] | None = None) -> Path:
    """One cache folder per preprocessing (spacing, intensity, landmarks), so a change never reads
    stale tensors. Patch settings do not change the cached whole images."""
    key = {"spacing": list(cfg.spacing), "intensity": cfg.intensity,
           **({"landmarks": [round(v, 6) for v in landmarks]} if landmarks else {})}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_root / f"preprocess-{digest[:12]}"


def cached_dataset(items: list[dict], cfg: PreprocessConfig, cache_root: Path, augment: str = "none",
                   landmarks: tuple[float, ...] | None = None, sample_patches: bool = False) -> PersistentDataset:
    """A ``PersistentDataset`` whose deterministic prefix (the whole preprocessed image) is cached
    on disk under ``cache_root``; ``sample_patches`` adds random patches, ``augment`` intensity
    augmentation.

    Items carry ``content`` (sha256 of image and label), which is part of MONAI's cache key: new
    content, new cache entry.
    """
    labelled = all("label" in it for it in items)
    chain = preprocessing(cfg, landmarks)
    if sample_patches:
        chain += patches(cfg, labelled)
    chain += augmentation(augment)
    # random transforms re-wrap tensors as MetaTensors: end with plain tensors so that every item
    # (cached, augmented or pseudo-labelled) collates the same way
    if sample_patches or augment != "none":
        chain.append(EnsureTyped(keys=KEYS, allow_missing_keys=True, track_meta=False))
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
