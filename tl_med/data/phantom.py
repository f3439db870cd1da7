"""A synthetic abdomen: analytic tissue shapes evaluated at patient (LPS, mm) coordinates.

The anatomy lives in physical space, independent of any scanner grid, so the same patient can be
"scanned" by sites with different spacing, orientation and field of view. The segmentation target
is a liver-like organ on the patient's right (negative LPS x) whose shape varies per patient.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> anatomy = sample_anatomy(rng)
    >>> pts = np.zeros((1, 3))
    >>> int(tissue_at(anatomy, pts)[0]) in (int(t) for t in Tissue)
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

__all__ = ["Tissue", "Ellipsoid", "Anatomy", "sample_anatomy", "tissue_at"]


class Tissue(IntEnum):
    AIR = 0
    FAT = 1
    MUSCLE = 2
    LIVER = 3
    SPLEEN = 4
    KIDNEY = 5
    BONE = 6
    VESSEL = 7


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid with a smooth per-patient surface perturbation (LPS mm)."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    wobble: float = 0.0
    phase: tuple[float, float] = (0.0, 0.0)

    def contains(self, pts: np.ndarray) -> np.ndarray:
        u = (pts - np.asarray(self.center)) / np.asarray(self.radii)
        d = np.sqrt((u * u).sum(axis=1))
        if self.wobble:
            d = d * (1.0 + self.wobble * np.sin(3.0 * u[:, 0] + self.phase[0])
                     * np.cos(2.0 * u[:, 2] + self.phase[1]))
        return d < 1.0


@dataclass(frozen=True)
class Anatomy:
    """One synthetic patient's abdomen."""

    body_radii: tuple[float, float]
    fat_fraction: float
    liver: Ellipsoid
    spleen: Ellipsoid
    kidneys: tuple[Ellipsoid, Ellipsoid]
    spine_center: tuple[float, float]
    spine_radius: float
    aorta_center: tuple[float, float]
    aorta_radius: float


def sample_anatomy(rng: np.random.Generator, spread: float = 1.0) -> Anatomy:
    """Draw one patient: sizes and positions vary, the layout stays anatomical.

    ``spread`` scales the liver's position and size variation (1: the demo's population; larger
    values make a fixed location prior less useful, as in the label-efficiency benchmark).
    """
    j = lambda scale: float(rng.uniform(-scale, scale))  # noqa: E731 - tiny jitter helper
    s = spread
    liver = Ellipsoid(
        center=(-32 + j(8 * s), -4 + j(8 * s), 8 + j(10 * s)),
        radii=(38 + j(7 * s), 34 + j(6 * s), 42 + j(8 * s)),
        wobble=0.18 + j(0.06),
        phase=(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0, 2 * np.pi))),
    )
    spleen = Ellipsoid(center=(48 + j(5), 18 + j(6), 14 + j(8)), radii=(17 + j(4), 20 + j(4), 28 + j(6)),
                       wobble=0.1, phase=(float(rng.uniform(0, 6)), 0.0))
    kz = -24 + j(8)
    kidneys = (
        Ellipsoid(center=(-42 + j(4), 40 + j(4), kz), radii=(13, 15, 26 + j(4))),
        Ellipsoid(center=(42 + j(4), 40 + j(4), kz + 6), radii=(13, 15, 26 + j(4))),
    )
    return Anatomy(
        body_radii=(86 + j(8), 66 + j(6)),
        fat_fraction=0.10 + float(rng.uniform(0, 0.06)),
        liver=liver,
        spleen=spleen,
        kidneys=kidneys,
        spine_center=(j(2), 58 + j(3)),
        spine_radius=12 + j(2),
        aorta_center=(8 + j(3), 36 + j(3)),
        aorta_radius=8 + j(1.5),
    )


def tissue_at(anatomy: Anatomy, pts: np.ndarray) -> np.ndarray:
    """Tissue class (uint8) at each LPS point of ``pts`` (shape ``(N, 3)``, mm).

    Later organs are painted over earlier ones; the body is an elliptic cylinder along z, cut at
    ±90 mm so that scans with different fields of view see the body end.
    """
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    ax, ay = anatomy.body_radii
    r2 = (x / ax) ** 2 + (y / ay) ** 2
    inner = 1.0 - anatomy.fat_fraction
    out = np.full(len(pts), Tissue.AIR, dtype=np.uint8)
    in_body = (r2 < 1.0) & (np.abs(z) < 90.0)
    out[in_body] = Tissue.FAT
    out[in_body & (r2 < inner * inner)] = Tissue.MUSCLE
    body = out == Tissue.MUSCLE
    for kidney in anatomy.kidneys:
        out[body & kidney.contains(pts)] = Tissue.KIDNEY
    out[body & anatomy.spleen.contains(pts)] = Tissue.SPLEEN
    out[body & anatomy.liver.contains(pts)] = Tissue.LIVER
    sx, sy = anatomy.spine_center
    out[body & ((x - sx) ** 2 + (y - sy) ** 2 < anatomy.spine_radius ** 2)] = Tissue.BONE
    vx, vy = anatomy.aorta_center
    out[body & ((x - vx) ** 2 + (y - vy) ** 2 < anatomy.aorta_radius ** 2)] = Tissue.VESSEL
    return out
