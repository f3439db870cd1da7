"""read_volume's direct path (uncompressed planes read straight into the volume) must give exactly
what the per-plane path (read_plane) and pydicom's own decoder give, and fail the same way."""

import gzip
import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from tl_med.data.dicom_writer import axial_ct_slice
from tl_med.ingest.convert import Volume, read_plane, read_volume, write_nifti
from tl_med.ingest.geometry import build_geometry, group_series
from tl_med.ingest.report import IngestReport
from tl_med.ingest.scan import scan_dicom_tree

NIBABEL_DATA = Path(nib.__file__).parent / "nicom" / "tests" / "data"


def _series(folder: Path, bits: int, stored: int, signed: bool, n: int = 4, rows: int = 6, cols: int = 5,
            slopes: tuple[tuple[float, float], ...] = ((1.0, -1024.0),)) -> Path:
    """``n`` axial slices with random stored values over the full ``stored``-bit range."""
    rng = np.random.default_rng(bits * 100 + stored + signed)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    folder.mkdir(parents=True)
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    lo, hi = (-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (0, (1 << stored) - 1)
    for k in range(n):
        ds = axial_ct_slice(study, series, frame, z=2.0 * k, pixel_spacing=(0.5, 0.6), thickness=2.0, rows=rows,
                            cols=cols, bits=bits, stored=stored, signed=signed)
        ds.PatientID, ds.InstanceNumber = "P", k + 1
        ds.RescaleSlope, ds.RescaleIntercept = slopes[k % len(slopes)]
        values = rng.integers(lo, hi + 1, (rows, cols)).astype(dtype)
        values.flat[:2] = lo, hi  # both ends of the range, whatever the draw
        if signed and stored < bits:  # only the low `stored` bits are written (high bits zero)
            values = (values.view(dtype.str.replace("i", "u")) & ((1 << stored) - 1)).view(dtype)
        ds.PixelData = values.tobytes()
        ds.save_as(folder / f"{k:03d}.dcm", enforce_file_format=True)
    return folder


def _geometry(folder: Path):
    stacks = list(group_series(scan_dicom_tree(folder, IngestReport("t"), rel_to=folder)).values())
    assert len(stacks) == 1
    geom = build_geometry(stacks[0])
    assert not isinstance(geom, str), geom
    return geom


def _by_plane(geom) -> np.ndarray:
    """The volume as the per-plane path builds it: read_plane, transposed, one slice at a time."""
    cache: dict = {}
    return np.stack([read_plane(f, cache).T for f in geom.frames], axis=2)


def _by_pydicom(geom) -> np.ndarray:
    """The volume from pydicom's own decoder (which sign-extends), frames in geometry order."""
    planes = []
    for f in geom.frames:
        arr = pydicom.dcmread(f.path).pixel_array
        planes.append((arr if f.index is None else arr[f.index]).T)
    return np.stack(planes, axis=2)


@pytest.mark.parametrize(("bits", "stored", "signed"), [
    (16, 12, False), (16, 12, True), (16, 16, True), (16, 16, False), (8, 8, False), (32, 20, True),
    (32, 32, False),
])
def test_direct_read_matches_plane_path_and_pydicom(tmp_path: Path, bits: int, stored: int, signed: bool):
    geom = _geometry(_series(tmp_path / "in", bits, stored, signed))
    assert all(f.native is not None for f in geom.frames)  # the direct path applies
    vol = read_volume(geom)
    assert (vol.slope, vol.intercept) == (1.0, -1024.0)
    assert vol.data.flags.f_contiguous and vol.data.shape == (5, 6, 4)
    ref = _by_plane(geom)
    assert vol.data.dtype == ref.dtype and np.array_equal(vol.data, ref)
    assert np.array_equal(vol.data, _by_pydicom(geom))
    if signed and stored < bits:
        assert vol.data.min() == -(1 << (stored - 1))  # sign-extended


def test_multiframe_file_reads_every_frame_from_its_offset(tmp_path: Path):
    src = NIBABEL_DATA / "philips_mprage.dcm.gz"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "mprage.dcm").write_bytes(gzip.decompress(src.read_bytes()))
    geom = _geometry(tmp_path / "in")
    assert len({f.path for f in geom.frames}) == 1 and len(geom.frames) > 1
    assert all(f.native is not None for f in geom.frames)
    vol = read_volume(geom)
    assert np.array_equal(vol.data, _by_plane(geom))
    assert np.array_equal(vol.data, _by_pydicom(geom))


def test_per_frame_rescale_still_gives_physical_floats(tmp_path: Path):
    geom = _geometry(_series(tmp_path / "in", 16, 12, False, slopes=((1.0, -1024.0), (2.0, 5.0))))
    vol = read_volume(geom)
    assert vol.data.dtype == np.float32 and (vol.slope, vol.intercept) == (1.0, 0.0)
    expected = np.stack([read_plane(f, {}).T.astype(np.float64) * f.slope + f.intercept for f in geom.frames],
                        axis=2).astype(np.float32)
    assert np.array_equal(vol.data, expected)


def test_file_cut_short_after_the_scan_is_an_error(tmp_path: Path):
    geom = _geometry(_series(tmp_path / "in", 16, 12, False))
    victim = geom.frames[2].path
    victim.write_bytes(victim.read_bytes()[:-7])
    with pytest.raises(ValueError, match="pixel data shorter than declared"):
        read_volume(geom)


@pytest.mark.parametrize("name", ["a.nii", "a.nii.gz"])
def test_written_hash_is_the_files_sha256_and_reproducible(tmp_path: Path, name: str):
    geom = _geometry(_series(tmp_path / "in", 16, 12, True, n=5, rows=33, cols=17))
    first = write_nifti(read_volume(geom), geom.affine, tmp_path / "one" / name)
    again = write_nifti(read_volume(geom), geom.affine, tmp_path / "two" / name)
    assert first.sha256 == hashlib.sha256(first.path.read_bytes()).hexdigest()
    assert first.path.read_bytes() == again.path.read_bytes()
    img = nib.load(first.path)
    assert np.array_equal(np.asarray(img.dataobj.get_unscaled()), read_volume(geom).data)
    plain = write_nifti(Volume(_by_plane(geom), 1.0, -1024.0), geom.affine, tmp_path / "three" / name)
    assert plain.sha256 == first.sha256  # same bytes as from the per-plane volume
