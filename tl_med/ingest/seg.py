"""DICOM SEG objects as labels: the segmentation of a series, resampled onto that series' NIfTI grid.

Pairing rule (see README "Sites and manifests"): a SEG labels the series named in its
ReferencedSeriesSequence. A NIfTI label in ``labels_dir`` for the same series wins (it is the
curated one), and a second SEG for a series is quarantined. Segment number ``n`` becomes label value
``n``, so segment 1 is the task's foreground (liver); a segment number with no label value
quarantines the SEG. Overlapping segments take the highest number. FRACTIONAL SEGs are thresholded
at one half.

The SEG is read with highdicom (``segread`` + ``get_volume``). Its frames are placed by their
plane positions, so a SEG that covers only some slices, or lists its frames in another order,
lands on the right slices. The SEG grid must be the image grid up to axis order and flips
(same orientation, spacing and in-plane origin); anything else is refused with the reason.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from tl_med.ingest.messages import safe_message

__all__ = ["SEG_STORAGE", "seg_label"]

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _index_map(seg_affine: np.ndarray, image_affine_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray] | str:
    """(R, t) with ``seg index = R @ image index + t``, when R is a signed permutation and t integral."""
    transform = np.linalg.inv(seg_affine) @ _LPS_FROM_RAS @ image_affine_ras
    rotation, offset = transform[:3, :3], transform[:3, 3]
    rounded = np.rint(rotation)
    if not np.allclose(rotation, rounded, atol=1e-3) or \
            sorted(np.abs(rounded).sum(axis=0)) != [1, 1, 1] or sorted(np.abs(rounded).sum(axis=1)) != [1, 1, 1]:
        return "SEG grid does not match its series (orientation or spacing differs)"
    if not np.allclose(offset, np.rint(offset), atol=1e-2):
        return "SEG grid does not match its series (frames lie between the image's slices or pixels)"
    return rounded.astype(int), np.rint(offset).astype(int)


def seg_label(path: Path, shape: tuple[int, int, int], affine: np.ndarray, allowed: set[int],
              notes: list[str] | None = None) -> np.ndarray | str:
    """The label volume (uint8, ``shape``) of the SEG at ``path`` on the image grid ``affine`` (RAS,
    as written to the NIfTI), or a one-line reason why it cannot be used."""
    import highdicom as hd

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seg = hd.seg.segread(path)
            volume = seg.get_volume(combine_segments=True, relabel=False, allow_missing_positions=True)
    except Exception as exc:  # noqa: BLE001 - any unusable SEG is a quarantine with its reason
        return f"DICOM SEG unusable ({safe_message(exc)})"
    values = {int(v) for v in np.unique(volume.array)}
    if not values <= allowed:
        return f"SEG has segment numbers {sorted(values - allowed)} without a label value (allowed: {sorted(allowed)})"
    mapping = _index_map(np.asarray(volume.affine, dtype=float), np.asarray(affine, dtype=float))
    if isinstance(mapping, str):
        return mapping
    rotation, offset = mapping
    index = np.indices(shape).reshape(3, -1)
    source = rotation @ index + offset[:, None]
    inside = np.all((source >= 0) & (source < np.array(volume.array.shape)[:, None]), axis=0)
    if not inside.any():
        return "SEG does not overlap its series' grid"
    label = np.zeros(index.shape[1], dtype=np.uint8)
    label[inside] = volume.array[tuple(source[:, inside])]
    return label.reshape(shape)
