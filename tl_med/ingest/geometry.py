"""Series geometry: group frames into stacks, order them along the slice normal, build the affine.

Frames are ordered by ImagePositionPatient projected on the normal of ImageOrientationPatient,
never by InstanceNumber. The spacing between slices comes from the positions, not SliceThickness.
Gaps (missing slices), uneven spacing and gantry tilt are always detected and reported; the
policy decides what happens next:

* ``refuse`` (default): the series is quarantined with the reason;
* ``resample``: the stack is resampled onto a regular orthogonal grid (linear interpolation
  between neighbouring slices; tilted slices shifted in-plane), and the reason is kept as the
  case's ``resampled`` flag in the manifest.

Duplicate positions and non-orthonormal orientations are refused under either policy.

Example:
    >>> lps_to_ras(np.eye(4))[0, 0]
    -1.0
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tl_med.ingest.header import Frame

__all__ = ["SeriesGeometry", "Correction", "GeometryPolicy", "group_series", "build_geometry",
           "lps_to_ras", "orientation_code"]

GeometryPolicy = Literal["refuse", "resample"]
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """Convert a DICOM (LPS) affine to the NIfTI (RAS) convention."""
    return _LPS_TO_RAS @ affine_lps


def orientation_code(affine: np.ndarray) -> str:
    """Three-letter axis code of a RAS affine, e.g. ``'LPS'`` for a plain DICOM axial stack."""
    import nibabel as nib

    return "".join(nib.aff2axcodes(affine))


@dataclass(frozen=True)
class Correction:
    """How to resample a stack onto a regular grid (the ``resample`` policy).

    ``along``: each slice's position along the normal (mm, from the first); ``target``: the
    regular positions wanted; ``shifts``: each slice's in-plane offset in pixels (columns, rows)
    that removes gantry tilt; ``note``: what was wrong, for the manifest.
    """

    along: np.ndarray
    target: np.ndarray
    shifts: np.ndarray
    note: str


@dataclass(frozen=True)
class SeriesGeometry:
    """A stack's frames in spatial order and its RAS affine (array axes: column, row, slice)."""

    frames: tuple[Frame, ...]
    affine: np.ndarray
    spacing: tuple[float, float, float]
    correction: Correction | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        n = len(self.correction.target) if self.correction else len(self.frames)
        return (self.frames[0].cols, self.frames[0].rows, n)


def group_series(frames: list[Frame]) -> dict[tuple, list[Frame]]:
    """Group frames into stacks: one per series, split further by orientation, size, pixel
    spacing, echo and (enhanced images) stack/temporal position.

    A series that mixes a localizer with the axial stack, or several echoes, yields several groups.
    """
    groups: dict[tuple, list[Frame]] = defaultdict(list)
    for f in frames:
        key = (f.study_uid, f.series_uid, tuple(round(v, 4) for v in f.iop), f.rows, f.cols,
               tuple(round(v, 4) for v in f.pixel_spacing), f.echo, f.stack)
        groups[key].append(f)
    return dict(groups)


def _affine(frame: Frame, origin: np.ndarray, step: np.ndarray) -> np.ndarray:
    row, col = np.asarray(frame.iop[:3]), np.asarray(frame.iop[3:])
    row_sp, col_sp = frame.pixel_spacing
    lps = np.eye(4)
    lps[:3, 0] = row * col_sp
    lps[:3, 1] = col * row_sp
    lps[:3, 2] = step
    lps[:3, 3] = origin
    return lps_to_ras(lps)


def _problems(along: np.ndarray, pos: np.ndarray, normal: np.ndarray, rel_tol: float,
              tilt_tol_rad: float) -> tuple[list[str], float]:
    steps = np.diff(along)
    step = float(np.median(steps))
    problems = []
    worst = int(np.argmax(np.abs(steps - step)))
    if abs(steps[worst] - step) > max(rel_tol * step, 1e-3):
        gap = " (missing slice?)" if steps[worst] > 1.5 * step else ""
        problems.append(f"uneven slice spacing: {steps[worst]:.3f} mm between slices {worst + 1} and "
                        f"{worst + 2} where {step:.3f} mm is expected{gap}")
    span = pos[-1] - pos[0]
    angle = float(np.arccos(min(1.0, abs(float(np.dot(span / np.linalg.norm(span), normal))))))
    if angle > tilt_tol_rad:
        problems.append(f"gantry tilt or sheared stack ({np.degrees(angle):.2f} degrees)")
    return problems, step


def build_geometry(stack: list[Frame], policy: GeometryPolicy = "refuse", rel_tol: float = 0.01,
                   tilt_tol_rad: float = 1e-3) -> SeriesGeometry | str:
    """Sort a stack along its normal and check it; returns the geometry or a one-line reason."""
    first = stack[0]
    row, col = np.asarray(first.iop[:3]), np.asarray(first.iop[3:])
    normal = np.cross(row, col)
    if not (np.isclose(np.linalg.norm(row), 1, atol=1e-3) and np.isclose(np.linalg.norm(col), 1, atol=1e-3)
            and abs(float(np.dot(row, col))) < 1e-3):
        return "ImageOrientationPatient is not two orthonormal vectors"
    if len(stack) == 1:  # a single slice: its thickness is the only spacing there is
        thickness = first.thickness if first.thickness > 0 else 1.0
        return SeriesGeometry(frames=(first,), affine=_affine(first, np.asarray(first.ipp), normal * thickness),
                              spacing=(first.pixel_spacing[1], first.pixel_spacing[0], thickness))
    ordered = sorted(stack, key=lambda f: float(np.dot(f.ipp, normal)))
    pos = np.array([f.ipp for f in ordered])
    along = (pos - pos[0]) @ normal
    steps = np.diff(along)
    if np.any(steps < 1e-3):
        return f"duplicate slice positions ({int(np.sum(steps < 1e-3)) + 1} slices share a position)"
    problems, step = _problems(along, pos, normal, rel_tol, tilt_tol_rad)
    spacing = (first.pixel_spacing[1], first.pixel_spacing[0])
    if not problems:
        span = pos[-1] - pos[0]
        return SeriesGeometry(frames=tuple(ordered), affine=_affine(first, pos[0], span / (len(ordered) - 1)),
                              spacing=(*spacing, float(np.linalg.norm(span)) / (len(ordered) - 1)))
    if policy == "refuse":
        return "; ".join(problems)
    n = int(round(float(along[-1]) / step)) + 1
    target = np.arange(n) * step
    inplane = (pos - pos[0]) - np.outer(along, normal)
    shifts = np.stack([inplane @ row / spacing[0], inplane @ col / spacing[1]], axis=1)
    note = "; ".join(problems) + f"; resampled to {n} slices at {step:.3f} mm"
    return SeriesGeometry(frames=tuple(ordered), affine=_affine(first, pos[0], normal * step),
                          spacing=(*spacing, step), correction=Correction(along, target, shifts, note))
