"""Synthetic hospital sites: DICOM series plus NIfTI liver masks, deterministic by seed.

Example:
    >>> from pathlib import Path
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> summary = generate_sites(out, sites=[SyntheticSite("east", "east", 1)], seed=0, downsample=4)
    >>> summary["east"]["studies"]
    1

Layout written for each site::

    <out>/<site>/dicom/study_0001/series_1/IM00001 ...   one file per slice, no extension
    <out>/<site>/labels/<SeriesInstanceUID>.nii.gz       liver mask on the series' grid (RAS affine)
    <out>/<site>/classes.csv                             key,class: each study's case-level class

The case-level class is :data:`CLASSES`: ``enlarged`` when the liver's volume is above the
population's nominal one (hepatomegaly, visible in the image; about half the studies), else
``normal``. It is read from the anatomy that was drawn, so the images do not change.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.uid import generate_uid

from tl_med.data.dicom_writer import FakePatient, SeriesUIDs, write_series
from tl_med.data.phantom import Tissue, sample_anatomy, tissue_at
from tl_med.data.scanners import PROFILES, ScannerProfile, grid_geometry, render, voxel_points

__all__ = ["SyntheticSite", "DEMO_SITES", "TINY_SITES", "CLASSES", "generate_sites", "lps_to_ras_affine",
           "liver_class"]

CLASSES = ("normal", "enlarged")
NOMINAL_LIVER_RADII = (38.0, 34.0, 42.0)  # phantom.sample_anatomy's centre values (mm)


@dataclass(frozen=True)
class SyntheticSite:
    """A site to generate: its name, scanner profile name and number of studies."""

    name: str
    profile: str
    n_studies: int
    spread: float = 1.0  # anatomical variation of the liver (see phantom.sample_anatomy)


DEMO_SITES = (SyntheticSite("north", "north", 40), SyntheticSite("east", "east", 18),
              SyntheticSite("west", "west", 18))
TINY_SITES = (SyntheticSite("north", "north", 6), SyntheticSite("east", "east", 5))

_FIRST = ("ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT", "GOLF", "HOTEL")


def lps_to_ras_affine(p: ScannerProfile) -> np.ndarray:
    """The NIfTI (RAS) affine of a profile's grid, array axes ordered (cols, rows, slices)."""
    row, col, normal, origin = grid_geometry(p)
    lps = np.eye(4)
    lps[:3, 0] = row * p.pixel_spacing
    lps[:3, 1] = col * p.pixel_spacing
    lps[:3, 2] = normal * p.slice_spacing
    lps[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _seed_for(seed: int, site: str, index: int) -> int:
    digest = hashlib.sha256(f"{seed}:{site}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _fake_patient(site: str, index: int, rng: np.random.Generator) -> FakePatient:
    year = int(rng.integers(1940, 2000))
    return FakePatient(
        name=f"ZZFAKE^{_FIRST[index % len(_FIRST)]}{index:03d}",
        patient_id=f"FAKEPID-{site.upper()}-{index:04d}",
        birth_date=f"{year}0{int(rng.integers(1, 10))}1{int(rng.integers(0, 10))}",
        sex="F" if index % 2 else "M",
        study_date=f"2024{int(rng.integers(10, 13))}{int(rng.integers(10, 29))}",
        accession=f"ZZACC{index:06d}",
        institution=f"{site.title()} Synthetic General Hospital",
        station=f"ZZSTATION-{site.upper()}"[:16],  # SH: at most 16 characters
        device_serial=f"ZZSERIAL-{site.upper()}-{index:04d}",
        referring_physician="ZZDOC^NOTREAL",
        study_description=f"ZZSTUDY ABDOMEN {_FIRST[index % len(_FIRST)]}",
        series_description=f"ZZSERIES LIVER {site.upper()}",
    )


def liver_class(anatomy) -> str:
    """``enlarged`` when the liver's ellipsoid volume exceeds the nominal one, else ``normal``."""
    return CLASSES[int(np.prod(anatomy.liver.radii) > np.prod(NOMINAL_LIVER_RADII))]


def generate_study(site: str, profile: ScannerProfile, index: int, seed: int,
                   out: Path, spread: float = 1.0) -> tuple[Path, Path]:
    """Generate one study of one site: returns (series folder, label path); its class is appended
    to ``<out>/<site>/classes.csv``."""
    rng = np.random.default_rng(_seed_for(seed, site, index))
    anatomy = sample_anatomy(rng, spread)
    pts = voxel_points(profile)
    shape = (profile.cols, profile.rows, profile.n_slices)
    tissue = tissue_at(anatomy, pts).reshape(shape)
    values = render(profile, tissue, pts, rng)
    entropy = [str(seed), site, str(index)]
    uids = SeriesUIDs(
        study=generate_uid(entropy_srcs=entropy + ["study"]),
        series=generate_uid(entropy_srcs=entropy + ["series"]),
        frame_of_reference=generate_uid(entropy_srcs=entropy + ["for"]),
        instance_root=generate_uid(entropy_srcs=entropy + ["sop"])[:48],
    )
    series_dir = out / site / "dicom" / f"study_{index + 1:04d}" / "series_1"
    write_series(values, profile, _fake_patient(site, index, rng), uids, series_dir)
    label = (tissue == Tissue.LIVER).astype(np.uint8)
    label_path = out / site / "labels" / f"{uids.series}.nii.gz"
    label_path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(label, lps_to_ras_affine(profile))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, label_path)
    classes = out / site / "classes.csv"
    with open(classes, "a") as fh:
        if fh.tell() == 0:
            fh.write("key,class\n")
        fh.write(f"{uids.study},{liver_class(anatomy)}\n")
    return series_dir, label_path


def generate_sites(out: Path, sites: tuple[SyntheticSite, ...] | list[SyntheticSite] = DEMO_SITES,
                   seed: int = 0, downsample: int = 1) -> dict[str, dict[str, int]]:
    """Write every site's studies under ``out``; returns per-site counts of studies and files.

    ``downsample`` > 1 keeps each scanner's field of view but coarsens its grid (tests use 4).
    """
    summary: dict[str, dict[str, int]] = {}
    for spec in sites:
        profile = PROFILES[spec.profile].downsampled(downsample)
        (out / spec.name / "classes.csv").unlink(missing_ok=True)  # written afresh, a row per study
        for index in range(spec.n_studies):
            generate_study(spec.name, profile, index, seed, out, spec.spread)
        summary[spec.name] = {"studies": spec.n_studies, "files": spec.n_studies * profile.n_slices}
    return summary
