"""Read a sorted stack's pixels, apply RescaleSlope/Intercept per slice, write a clean NIfTI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from tl_med.ingest.geometry import SeriesGeometry

__all__ = ["read_volume", "write_nifti", "file_sha256"]


def read_volume(geom: SeriesGeometry) -> np.ndarray:
    """The stack as an array of shape (columns, rows, slices) in physical units.

    Values stay int16 when every slice's rescale gives integers in range, else float32.
    """
    planes = []
    for s in geom.slices:
        ds = pydicom.dcmread(s.path)
        if (ds.Rows, ds.Columns) != (s.rows, s.cols):
            raise ValueError(f"{s.rel}: Rows/Columns changed between header and pixel read")
        arr = ds.pixel_array.astype(np.float64)
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        planes.append(arr * slope + intercept)
    vol = np.stack(planes, axis=-1).transpose(1, 0, 2)
    if np.all(np.mod(vol, 1) == 0) and vol.min() >= -32768 and vol.max() <= 32767:
        return vol.astype(np.int16)
    return vol.astype(np.float32)


def write_nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """Write ``data`` with ``affine`` as both sform and qform; header text fields stay empty."""
    if not np.all(np.isfinite(affine)):
        raise ValueError("non-finite affine")
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
