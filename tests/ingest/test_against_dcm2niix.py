"""tl_med's conversion must match the reference converter dcm2niix.

For every volume dcm2niix writes from the real DICOM files shipped with pydicom, pydicom-data and
nibabel, and from the synthetic sites, tl_med must write one with identical voxel values (after
each file's scaling) and an affine within 1e-3 mm and 1e-4 rad, or the input must be one that
tl_med deliberately does not convert, with the recorded reason below.
"""

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom.data
import pytest

from tl_med.ingest.convert import read_volume, write_nifti
from tl_med.ingest.geometry import build_geometry, group_series
from tl_med.ingest.report import IngestReport
from tl_med.ingest.scan import scan_dicom_tree

_BESIDE = Path(sys.executable).parent / "dcm2niix"
DCM2NIIX = str(_BESIDE) if _BESIDE.exists() else shutil.which("dcm2niix")
NIBABEL_DATA = Path(nib.__file__).parent / "nicom" / "tests" / "data"

# Single files and folders from pydicom / pydicom-data (CT, MR, enhanced CT, every transfer syntax).
PYDICOM_FILES = [
    "CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
    "MR_small_implicit.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_padded.dcm", "MR2_UNCI.dcm", "MR2_UNCR.dcm", "MR2_J2KR.dcm", "MR2_J2KI.dcm", "693_UNCI.dcm",
    "693_UNCR.dcm", "693_J2KR.dcm", "693_J2KI.dcm", "eCT_Supplemental.dcm", "explicit_VR-UN.dcm",
    "bad_sequence.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm", "examples_overlay.dcm", "dicomdirtests",
]
NIBABEL_FILES = ["philips_mprage.dcm.gz", "0.dcm", "decimal_rescale.dcm"]

# Inputs dcm2niix converts and tl_med deliberately does not, with the reason tl_med records.
NOT_CONVERTED = {
    "0.dcm": "Siemens mosaic",  # dcm2niix de-mosaics; tl_med quarantines mosaics
    "decimal_rescale.dcm": "without StudyInstanceUID",  # cannot be grouped into a series
    "dicomdirtests": "without patient geometry",  # 3 projection images dcm2niix places arbitrarily,
    # and a "series" of one slice 202 mm from three others, which dcm2niix writes as one volume
}
OVERLAY_ROI = "_ROI"  # dcm2niix also writes overlay planes as images: not an image series


def _columns_close(ours: np.ndarray, ref: np.ndarray) -> None:
    np.testing.assert_allclose(ours[:3, 3], ref[:3, 3], atol=1e-3)  # origin, mm
    for k in range(3):
        a, b = ours[:3, k], ref[:3, k]
        assert abs(np.linalg.norm(a) - np.linalg.norm(b)) < 1e-3  # spacing, mm
        cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
        assert np.arccos(min(1.0, cos)) < 1e-4  # direction, rad


def _ours(folder: Path, out: Path) -> tuple[list[nib.Nifti1Image], IngestReport]:
    report = IngestReport("t")
    images = []
    for k, stack in enumerate(group_series(scan_dicom_tree(folder, report, rel_to=folder)).values()):
        geom = build_geometry(stack)
        if not isinstance(geom, str):
            path = write_nifti(read_volume(geom), geom.affine, out / f"ours{k}.nii").path
            images.append(nib.as_closest_canonical(nib.load(path)))
    return images, report


def _compare(folder: Path, tmp: Path) -> tuple[int, list[str], IngestReport]:
    """(volumes matched, dcm2niix outputs without a match, report) for one input folder."""
    ref_dir = tmp / "ref"
    ref_dir.mkdir()
    subprocess.run([DCM2NIIX, "-z", "n", "-p", "n", "-f", "%s_%j", "-o", str(ref_dir), str(folder)],
                   check=True, capture_output=True)
    ours, report = _ours(folder, tmp)
    matched, unmatched = 0, []
    for ref_path in sorted(ref_dir.glob("*.nii")):
        if OVERLAY_ROI in ref_path.name:
            continue
        ref = nib.as_closest_canonical(nib.load(ref_path))
        values = ref.get_fdata()
        values = values[..., 0] if values.ndim == 4 and values.shape[3] == 1 else values
        hits = [o for o in ours if o.shape == values.shape and np.array_equal(o.get_fdata(), values)]
        if not hits:
            unmatched.append(ref_path.name)
            continue
        _columns_close(hits[0].affine, ref.affine)
        matched += 1
    return matched, unmatched, report


def _stage(name: str, tmp: Path) -> Path:
    src = NIBABEL_DATA / name if name in NIBABEL_FILES else Path(pydicom.data.get_testdata_file(name, download=False))
    folder = tmp / "in"
    if src.is_dir():
        shutil.copytree(src, folder)
    else:
        folder.mkdir()
        data = gzip.decompress(src.read_bytes()) if src.suffix == ".gz" else src.read_bytes()
        (folder / src.name.removesuffix(".gz")).write_bytes(data)
    return folder


@pytest.mark.parametrize("name", PYDICOM_FILES + NIBABEL_FILES)
def test_real_files_match_dcm2niix(name: str, tmp_path: Path):
    assert DCM2NIIX, "dcm2niix not found: it is a dev dependency (pip install -e '.[dev]')"
    matched, unmatched, report = _compare(_stage(name, tmp_path), tmp_path)
    if name in NOT_CONVERTED:
        assert unmatched, f"{name}: now converted, take it off NOT_CONVERTED"
        reasons = " | ".join(o.reason for o in report.outcomes.values())
        assert NOT_CONVERTED[name] in reasons
    else:
        assert matched >= 1 and not unmatched, f"{name}: dcm2niix volumes without a tl_med match: {unmatched}"


@pytest.mark.parametrize("site", ["north", "east"])
def test_synthetic_sites_match_dcm2niix(tiny_incoming: Path, tmp_path: Path, site: str):
    for study in sorted((tiny_incoming / site / "dicom").iterdir())[:3]:
        work = tmp_path / study.name
        work.mkdir()
        matched, unmatched, _ = _compare(study, work)
        assert matched == 1 and not unmatched
