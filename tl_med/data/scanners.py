"""Scanner profiles: how one hospital's scanner turns anatomy into pixel values and geometry.

Each profile fixes the acquisition geometry (orientation, matrix, spacing, slice thickness), the
tissue contrast (CT phase or MR weighting), a contrast curve, a bias field, blur and noise, and
the DICOM storage encoding (RescaleSlope/Intercept). The three demo profiles differ on all of
them, so a model trained at ``north`` loses accuracy at ``east`` and ``west``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter

from tl_med.data.phantom import Tissue

__all__ = ["ScannerProfile", "PROFILES", "grid_geometry", "render"]

Orientation = Literal["axial", "sagittal", "coronal"]

# Row direction, column direction (LPS) of the image plane for each acquisition orientation.
_PLANES: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
}


@dataclass(frozen=True)
class ScannerProfile:
    """One site's scanner. ``tissue_values`` is indexed by :class:`Tissue`."""

    modality: Literal["CT", "MR"]
    manufacturer: str
    model: str
    orientation: Orientation
    rows: int
    cols: int
    pixel_spacing: float
    n_slices: int
    slice_spacing: float
    tissue_values: tuple[float, ...]
    gamma: float = 1.0
    bias: float = 0.0
    noise: float = 0.0
    blur_mm: float = 0.0
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    descending_instances: bool = False
    acquisition: dict[str, object] = field(default_factory=dict)

    @property
    def slice_thickness(self) -> float:
        return self.slice_spacing

    def downsampled(self, factor: int) -> "ScannerProfile":
        """The same scanner at a coarser grid (same field of view), for fast tests."""
        if factor == 1:
            return self
        return replace(self, rows=self.rows // factor, cols=self.cols // factor,
                       pixel_spacing=self.pixel_spacing * factor,
                       n_slices=max(4, self.n_slices // factor), slice_spacing=self.slice_spacing * factor)


def grid_geometry(p: ScannerProfile) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row direction, column direction, slice normal (unit LPS vectors) and first-voxel position.

    The field of view is centred on the isocentre. Slice ``k`` sits at ``origin + k*spacing*normal``.
    """
    row, col = (np.asarray(v) for v in _PLANES[p.orientation])
    normal = np.cross(row, col)
    origin = -(row * p.pixel_spacing * (p.cols - 1) / 2
               + col * p.pixel_spacing * (p.rows - 1) / 2
               + normal * p.slice_spacing * (p.n_slices - 1) / 2)
    return row, col, normal, origin


def voxel_points(p: ScannerProfile) -> np.ndarray:
    """LPS coordinates of every voxel, ordered as an array of shape ``(cols, rows, slices)``."""
    row, col, normal, origin = grid_geometry(p)
    i, j, k = np.meshgrid(np.arange(p.cols), np.arange(p.rows), np.arange(p.n_slices), indexing="ij")
    pts = (origin[None, :]
           + i.reshape(-1, 1) * p.pixel_spacing * row
           + j.reshape(-1, 1) * p.pixel_spacing * col
           + k.reshape(-1, 1) * p.slice_spacing * normal)
    return pts


def render(p: ScannerProfile, tissue: np.ndarray, pts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Physical pixel values (HU for CT, arbitrary units for MR) for a tissue map of shape (cols, rows, slices)."""
    table = np.asarray(p.tissue_values, dtype=np.float64)
    lo, hi = table.min(), table.max()
    values = table[tissue]
    if p.gamma != 1.0:  # scanner-specific contrast curve on the dynamic range
        values = lo + (hi - lo) * ((values - lo) / (hi - lo)) ** p.gamma
    if p.bias:
        a = rng.normal(size=4)
        x, y, z = (pts[:, d].reshape(tissue.shape) / 100.0 for d in range(3))
        field_ = np.exp(p.bias * (a[0] * x + a[1] * y + a[2] * z + a[3] * x * z) / 2.0)
        values = lo + (values - lo) * field_
    if p.blur_mm:
        sigma = (p.blur_mm / p.pixel_spacing, p.blur_mm / p.pixel_spacing, p.blur_mm / p.slice_spacing)
        values = gaussian_filter(values, sigma=sigma)
    if p.noise:
        values = values + rng.normal(scale=p.noise, size=values.shape)
    return values


_CT_MR = dict(
    north=ScannerProfile(
        modality="CT", manufacturer="SIEMENS", model="SOMATOM Definition AS+", orientation="axial",
        rows=96, cols=96, pixel_spacing=2.0, n_slices=64, slice_spacing=3.0,
        # portal-venous CT: enhanced liver and spleen (HU)
        tissue_values=(-1000, -100, 45, 120, 125, 190, 650, 170),
        noise=12.0, blur_mm=1.0, rescale_intercept=-1024.0,
        acquisition={"KVP": 120, "ConvolutionKernel": "B30f", "ContrastBolusAgent": "IODINE"},
    ),
    east=ScannerProfile(
        modality="CT", manufacturer="GE MEDICAL SYSTEMS", model="Revolution EVO", orientation="axial",
        rows=128, cols=128, pixel_spacing=1.5, n_slices=40, slice_spacing=5.0,
        # low-dose non-contrast CT, sharp kernel, in a population with fatty liver disease:
        # the liver is hypodense to muscle and spleen (it is hyperdense at the source site)
        tissue_values=(-1000, -110, 55, 5, 60, 35, 700, 45),
        gamma=0.8, noise=20.0, blur_mm=2.5, rescale_slope=0.5, rescale_intercept=-2048.0,
        acquisition={"KVP": 100, "ConvolutionKernel": "BONEPLUS", "ContrastBolusAgent": "IODINE"},
    ),
    west=ScannerProfile(
        modality="MR", manufacturer="Philips Medical Systems", model="Ingenia", orientation="sagittal",
        rows=96, cols=96, pixel_spacing=2.0, n_slices=48, slice_spacing=4.0,
        # T2-weighted MR: bright fat and fluid, dark bone and flow voids
        tissue_values=(0, 620, 170, 260, 520, 700, 110, 40),
        bias=0.7, noise=14.0, blur_mm=1.5, descending_instances=True,
        acquisition={"MagneticFieldStrength": 1.5, "RepetitionTime": 3000.0, "EchoTime": 90.0,
                     "ScanningSequence": "SE", "SequenceVariant": "SK", "MRAcquisitionType": "2D"},
    ),
)

# Held out: no setting of tl_med (augmentation, step, default) was chosen by looking at this site.
# Benchmarks check a method here before calling it a win; the demo does not use it.
_HELD_OUT = dict(
    south=ScannerProfile(
        modality="MR", manufacturer="GE MEDICAL SYSTEMS", model="SIGNA Architect", orientation="coronal",
        rows=112, cols=112, pixel_spacing=1.75, n_slices=36, slice_spacing=5.0,
        # T1-weighted 3 T gradient echo: bright fat and marrow, liver brighter than spleen and muscle,
        # dark flow voids; a steep contrast curve and a strong surface-coil bias field
        tissue_values=(0, 560, 190, 330, 210, 240, 430, 25),
        gamma=1.4, bias=0.9, noise=18.0, blur_mm=2.0,
        acquisition={"MagneticFieldStrength": 3.0, "RepetitionTime": 5.5, "EchoTime": 2.3,
                     "ScanningSequence": "GR", "SequenceVariant": "SP", "MRAcquisitionType": "3D"},
    ),
    # Added after every setting was chosen, to check the zero-label recipe on a contrast nobody looked at.
    midland=ScannerProfile(
        modality="MR", manufacturer="SIEMENS", model="MAGNETOM Sola", orientation="axial",
        rows=96, cols=96, pixel_spacing=2.2, n_slices=36, slice_spacing=6.0,
        # fat-saturated, fluid-attenuated T2 (FLAIR-like): dark fat, fluid and flow voids, spleen above
        # liver above muscle, kidneys darker than the liver; thick slices and low SNR
        tissue_values=(0, 70, 150, 230, 310, 190, 50, 30),
        bias=0.5, noise=20.0, blur_mm=2.0,
        acquisition={"MagneticFieldStrength": 1.5, "RepetitionTime": 9000.0, "EchoTime": 85.0,
                     "InversionTime": 2500.0, "ScanningSequence": ["SE", "IR"], "SequenceVariant": "SK",
                     "MRAcquisitionType": "2D"},
    ),
)

PROFILES: dict[str, ScannerProfile] = {**_CT_MR, **_HELD_OUT}
assert all(len(p.tissue_values) == len(Tissue) for p in PROFILES.values())
