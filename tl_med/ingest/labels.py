"""Pair NIfTI label masks with ingested series and check they fit.

The pairing rule: a label file in the site's ``labels_dir`` is named ``<key>.nii.gz`` (or ``.nii``)
where ``<key>`` is the SeriesInstanceUID, the StudyInstanceUID or the AccessionNumber of the series
it labels (first match wins, in that order). A label must have the image's shape and affine
(within 0.01 mm) and only the values of the task's label map; otherwise it is quarantined and the
image is ingested as unlabelled.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["label_key", "index_labels", "check_label"]


def label_key(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return ""


def index_labels(labels_dir: Path) -> dict[str, Path]:
    """All files under ``labels_dir`` by pairing key ('' for files that are not NIfTI)."""
    if not labels_dir.is_dir():
        return {}
    return {str(p): p for p in sorted(labels_dir.rglob("*")) if p.is_file()}


def check_label(path: Path, shape: tuple[int, ...], affine: np.ndarray,
                allowed: set[int], atol_mm: float = 0.01) -> np.ndarray | str:
    """The label array (uint8), or a one-line reason why it cannot be used with this image."""
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - unreadable label is a quarantine
        return f"unreadable NIfTI ({type(exc).__name__})"
    if not np.all(np.isfinite(img.affine)):
        return "label has a non-finite affine"
    if tuple(data.shape) != tuple(shape):
        return f"label shape {tuple(data.shape)} does not match image shape {tuple(shape)}"
    if not np.allclose(img.affine, affine, atol=atol_mm):
        worst = float(np.abs(img.affine - affine).max())
        return f"label geometry does not match its image (affine differs by up to {worst:.3g} mm)"
    if not np.all(np.isfinite(data)) or np.any(np.mod(data, 1) != 0):
        return "label has non-integer values"
    values = {int(v) for v in np.unique(data)}
    if not values <= allowed:
        return f"label has unexpected values {sorted(values - allowed)} (allowed: {sorted(allowed)})"
    return data.astype(np.uint8)
