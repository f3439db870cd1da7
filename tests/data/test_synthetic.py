import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from tl_med.data.scanners import PROFILES
from tl_med.data.synthetic import SyntheticSite, generate_sites


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_generation_is_deterministic_by_seed(tmp_path: Path):
    spec = [SyntheticSite("west", "west", 1)]
    generate_sites(tmp_path / "a", spec, seed=3, downsample=4)
    generate_sites(tmp_path / "b", spec, seed=3, downsample=4)
    generate_sites(tmp_path / "c", spec, seed=4, downsample=4)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_series_are_valid_image_iods_with_consistent_geometry(tiny_incoming: Path):
    for site, sop in (("north", "CT Image Storage"), ("east", "CT Image Storage")):
        files = sorted((tiny_incoming / site / "dicom" / "study_0001" / "series_1").iterdir())
        ds = pydicom.dcmread(files[0])
        assert ds.SOPClassUID.name == sop and ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.Manufacturer == PROFILES[site].manufacturer
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
        label = nib.load(tiny_incoming / site / "labels" / f"{ds.SeriesInstanceUID}.nii.gz")
        assert label.shape == (ds.Columns, ds.Rows, len(files))
        # voxel (0,0,k) of the label is the ImagePositionPatient of slice k, in RAS
        positions = {tuple(np.round([-float(v) if i < 2 else float(v) for i, v in
                                     enumerate(pydicom.dcmread(f).ImagePositionPatient)], 3)) for f in files}
        for k in (0, len(files) - 1):
            assert tuple(np.round(label.affine @ [0, 0, k, 1], 3)[:3]) in positions
        assert 0 < np.asarray(label.dataobj).mean() < 0.5


def test_sites_differ_in_scanner_geometry_and_contrast():
    north, east, west = PROFILES["north"], PROFILES["east"], PROFILES["west"]
    assert len({north.manufacturer, east.manufacturer, west.manufacturer}) == 3
    assert west.orientation == "sagittal" and west.modality == "MR"
    assert east.slice_spacing > north.slice_spacing and east.pixel_spacing != north.pixel_spacing
    # the liver is brighter than muscle at the source and darker at the east site
    assert north.tissue_values[3] > north.tissue_values[2] and east.tissue_values[3] < east.tissue_values[2]


def test_the_held_out_site_is_a_coronal_t1_mr_whose_label_lies_on_its_liver(tmp_path: Path):
    generate_sites(tmp_path, [SyntheticSite("south", "south", 1)], seed=0, downsample=2)
    files = sorted((tmp_path / "south" / "dicom" / "study_0001" / "series_1").iterdir())
    first = pydicom.dcmread(files[0])
    assert first.SOPClassUID.name == "MR Image Storage" and first.MagneticFieldStrength == 3.0
    assert [round(float(v)) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 0, -1]  # coronal
    label = nib.load(tmp_path / "south" / "labels" / f"{first.SeriesInstanceUID}.nii.gz")
    # label voxel (i, j, k) is pixel (row j, column i) of the slice whose position is voxel (0, 0, k)
    ras = {tuple(np.round(label.affine @ [0, 0, k, 1], 3)[:3]): k for k in range(label.shape[2])}
    volume = np.zeros(label.shape)
    for d in map(pydicom.dcmread, files):
        lps = [float(v) for v in d.ImagePositionPatient]
        volume[..., ras[tuple(np.round([-lps[0], -lps[1], lps[2]], 3))]] = d.pixel_array.T
    liver = np.asarray(label.dataobj) > 0
    # the labelled voxels hold the liver's T1 value through the scanner's contrast curve (bias and noise aside)
    values = PROFILES["south"].tissue_values
    expected = max(values) * (values[3] / max(values)) ** PROFILES["south"].gamma
    assert abs(np.median(volume[liver]) / expected - 1) < 0.15
    assert values[3] > values[4] > values[2]  # T1: liver brighter than spleen and muscle (CT source: equal)


def test_the_flair_like_held_out_site_orders_its_tissues_unlike_every_other_site(tmp_path: Path):
    generate_sites(tmp_path, [SyntheticSite("midland", "midland", 1)], seed=0, downsample=2)
    first = pydicom.dcmread(next((tmp_path / "midland" / "dicom" / "study_0001" / "series_1").iterdir()))
    assert first.SOPClassUID.name == "MR Image Storage" and list(first.ScanningSequence) == ["SE", "IR"]
    assert float(first.InversionTime) == 2500.0
    order = {name: sorted(range(len(p.tissue_values)), key=p.tissue_values.__getitem__)
             for name, p in PROFILES.items()}
    # fat, flow voids and fluid-heavy kidneys dark; spleen > liver > muscle: a tissue order no other site has
    assert sum(o == order["midland"] for o in order.values()) == 1
    values = PROFILES["midland"].tissue_values
    assert values[4] > values[3] > values[2] > values[1] and values[5] < values[3]
