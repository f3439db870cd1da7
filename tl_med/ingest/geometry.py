"""Series geometry: group slices, order them along the slice normal, build the NIfTI affine.

Slices are ordered by ImagePositionPatient projected on the normal of ImageOrientationPatient,
never by InstanceNumber. Spacing between slices comes from the positions, not SliceThickness.
Gaps, uneven spacing, duplicates and gantry tilt are refused with a reason (the ``refuse`` policy).

Example:
    >>> lps_to_ras(np.eye(4))[0, 0]
    -1.0
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from tl_med.ingest.scan import SliceHeader

__all__ = ["SeriesGeometry", "group_series", "build_geometry", "lps_to_ras", "orientation_code"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """Convert a DICOM (LPS) affine to the NIfTI (RAS) convention."""
    return _LPS_TO_RAS @ affine_lps


def orientation_code(affine: np.ndarray) -> str:
    """Three-letter axis code of a RAS affine, e.g. ``'LPS'`` for a plain DICOM axial stack."""
    import nibabel as nib

    return "".join(nib.aff2axcodes(affine))


@dataclass(frozen=True)
class SeriesGeometry:
    """A series' slices in spatial order and its RAS affine (array axes: column, row, slice)."""

    slices: tuple[SliceHeader, ...]
    affine: np.ndarray
    spacing: tuple[float, float, float]


def group_series(slices: list[SliceHeader]) -> dict[tuple, list[SliceHeader]]:
    """Group slices into stacks: one per series, split further by orientation, size and echo.

    A series that mixes a localizer with the axial stack, or several echoes, yields several groups.
    """
    groups: dict[tuple, list[SliceHeader]] = defaultdict(list)
    for s in slices:
        iop = tuple(round(v, 4) for v in s.iop)
        key = (s.study_uid, s.series_uid, iop, s.rows, s.cols,
               tuple(round(v, 4) for v in s.pixel_spacing), s.echo)
        groups[key].append(s)
    return dict(groups)


def build_geometry(stack: list[SliceHeader], rel_tol: float = 0.01,
                   tilt_tol_rad: float = 1e-3) -> SeriesGeometry | str:
    """Sort a stack along its normal and check it; returns the geometry or a one-line reason."""
    if len(stack) < 2:
        return "single-slice series (localizer or incomplete series), no volume to build"
    row = np.asarray(stack[0].iop[:3])
    col = np.asarray(stack[0].iop[3:])
    normal = np.cross(row, col)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        return "ImageOrientationPatient is not two orthonormal vectors"
    ordered = sorted(stack, key=lambda s: float(np.dot(s.ipp, normal)))
    pos = np.array([s.ipp for s in ordered])
    along = pos @ normal
    steps = np.diff(along)
    if np.any(steps < 1e-3):
        return f"duplicate slice positions ({int(np.sum(steps < 1e-3))} slices share a position)"
    step = float(np.median(steps))
    worst = int(np.argmax(np.abs(steps - step)))
    if abs(steps[worst] - step) > max(rel_tol * step, 1e-3):
        return (f"uneven slice spacing: {steps[worst]:.3f} mm between slices {worst + 1} and {worst + 2} "
                f"where {step:.3f} mm is expected (missing slice?)")
    span = pos[-1] - pos[0]
    cos = float(np.dot(span / np.linalg.norm(span), normal))
    if np.arccos(min(1.0, abs(cos))) > tilt_tol_rad:
        return f"gantry tilt or sheared stack ({np.degrees(np.arccos(min(1.0, abs(cos)))):.2f} degrees)"
    row_sp, col_sp = stack[0].pixel_spacing
    lps = np.eye(4)
    lps[:3, 0] = row * col_sp
    lps[:3, 1] = col * row_sp
    lps[:3, 2] = span / (len(ordered) - 1)
    lps[:3, 3] = pos[0]
    return SeriesGeometry(slices=tuple(ordered), affine=lps_to_ras(lps),
                          spacing=(col_sp, row_sp, float(np.linalg.norm(span)) / (len(ordered) - 1)))
