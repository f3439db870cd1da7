"""Pair NIfTI label masks with ingested series and check they fit.

The pairing rule: a label file in the site's ``labels_dir`` is named ``<key>.nii.gz`` (or ``.nii``)
where ``<key>`` is the SeriesInstanceUID, the StudyInstanceUID or the AccessionNumber of the series
it labels (first match wins, in that order). A label must lie on the image's voxel grid (within
0.01 mm; the same voxel centres in another axis order or direction are reoriented, and the report
says so) and hold only the values of the task's label map; otherwise it is quarantined and the
image is ingested as unlabelled.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["label_key", "index_labels", "check_label", "reorient_onto"]


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


def reorient_onto(data: np.ndarray, label_affine: np.ndarray, shape: tuple[int, ...], affine: np.ndarray,
                  atol_mm: float = 0.01) -> tuple[np.ndarray, str] | None:
    """``data`` (on ``label_affine``'s grid) on the image grid (``shape``, ``affine``) when both
    grids have the same voxel centres in another axis order or direction (a mask drawn on another
    tool's NIfTI of the series, e.g. dcm2niix's with the slice axis reversed): the reoriented array
    and what was done; ``None`` when the physical grids differ."""
    if data.ndim != 3 or len(shape) != 3:
        return None
    # image voxel index -> label voxel index; must be a signed permutation plus a whole-voxel shift
    m = np.linalg.solve(label_affine, affine)
    rot, shift = m[:3, :3], m[:3, 3]
    perm = np.rint(rot)
    voxel = np.linalg.norm(affine[:3, :3], axis=0)
    if np.abs(rot - perm).max() * voxel.max() > atol_mm or not np.all(np.abs(perm).sum(axis=0) == 1) \
            or not np.all(np.abs(perm).sum(axis=1) == 1):
        return None
    axes = [int(np.nonzero(perm[:, i])[0][0]) for i in range(3)]  # label axis of each image axis
    signs = [int(perm[axes[i], i]) for i in range(3)]
    if tuple(data.shape[a] for a in axes) != tuple(shape):
        return None
    for i, (a, sign) in enumerate(zip(axes, signs)):
        expected = 0 if sign > 0 else data.shape[a] - 1
        if abs(shift[a] - expected) * voxel[i] > atol_mm:
            return None
    out = np.transpose(data, axes)
    flipped = [i for i, sign in enumerate(signs) if sign < 0]
    if flipped:
        out = np.flip(out, axis=flipped)
    moved = [f"axis {i} from label axis {a}" for i, a in enumerate(axes) if a != i]
    what = ", ".join([*(f"axis {i} reversed" for i in flipped), *moved])
    return np.ascontiguousarray(out), f"label reoriented onto its image's grid ({what})"


def check_label(path: Path, shape: tuple[int, ...], affine: np.ndarray,
                allowed: set[int], atol_mm: float = 0.01, notes: list[str] | None = None) -> np.ndarray | str:
    """The label array (uint8) on the image's grid, or a one-line reason why it cannot be used with
    this image. A label on the same voxel centres in another axis order or direction is reoriented
    (and ``notes`` says so); a label on another physical grid is refused."""
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - unreadable label is a quarantine
        return f"unreadable NIfTI ({type(exc).__name__})"
    if not np.all(np.isfinite(img.affine)):
        return "label has a non-finite affine"
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if tuple(data.shape) != tuple(shape) or not np.allclose(img.affine, affine, atol=atol_mm):
        moved = reorient_onto(data, np.asarray(img.affine, dtype=float), shape, np.asarray(affine, dtype=float), atol_mm)
        if moved is None and tuple(sorted(data.shape)) != tuple(sorted(shape)):
            return f"label shape {tuple(data.shape)} does not match image shape {tuple(shape)}"
        if moved is None:
            worst = float(np.abs(img.affine - affine).max())
            return f"label geometry does not match its image (affine differs by up to {worst:.3g} mm)"
        data = moved[0]
        if notes is not None:
            notes.append(moved[1])
    if not np.all(np.isfinite(data)) or np.any(np.mod(data, 1) != 0):
        return "label has non-integer values"
    values = {int(v) for v in np.unique(data)}
    if not values <= allowed:
        return f"label has unexpected values {sorted(values - allowed)} (allowed: {sorted(allowed)})"
    return data.astype(np.uint8)
