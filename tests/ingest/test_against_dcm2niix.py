"""tl_med's conversion must match the reference converter dcm2niix voxel for voxel."""

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tl_med.ingest.site import ingest_site
from tl_med.manifests import load_manifest
from tl_med.sites import load_sites

# dcm2niix is a dev dependency (PyPI package): look beside this interpreter first, then on PATH.
_BESIDE = Path(sys.executable).parent / "dcm2niix"
DCM2NIIX = str(_BESIDE) if _BESIDE.exists() else shutil.which("dcm2niix")


@pytest.mark.parametrize("site", ["north", "east"])
def test_volumes_match_dcm2niix(workspace, tmp_path: Path, site: str):
    assert DCM2NIIX, "dcm2niix not found: it is a dev dependency (pip install -e '.[dev]')"
    ws, sites_file = workspace
    result = ingest_site(load_sites(sites_file, ws.root).get(site), ws, task="liver")
    ours = {}
    for case in load_manifest(result.manifest_path).training:
        img = nib.as_closest_canonical(nib.load(result.manifest_path.parent / case.image))
        ours[img.get_fdata().tobytes()] = img.affine
    for study in sorted((ws.incoming / site / "dicom").iterdir()):
        out = tmp_path / study.name
        out.mkdir()
        subprocess.run([DCM2NIIX, "-z", "n", "-f", "ref", "-o", str(out), str(study / "series_1")],
                       check=True, capture_output=True)
        ref = nib.as_closest_canonical(nib.load(out / "ref.nii"))
        key = ref.get_fdata().tobytes()
        if key in ours:  # identical voxel values; geometry within 1e-3 mm
            np.testing.assert_allclose(ours.pop(key), ref.affine, atol=1e-3)
    assert not ours, "some converted training volumes differ from dcm2niix's"
