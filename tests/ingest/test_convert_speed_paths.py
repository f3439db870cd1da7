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
from tl_med.ingest.convert import Volume, planes_of, read_plane, read_volume, write_nifti
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


@pytest.mark.parametrize("name", ["a.nii", "a.nii.gz"])
@pytest.mark.parametrize(("bits", "stored", "signed"), [(16, 12, True), (8, 8, False), (32, 20, True)])
def test_streamed_planes_write_the_same_bytes_as_the_volume(tmp_path: Path, name: str, bits: int, stored: int,
                                                            signed: bool):
    geom = _geometry(_series(tmp_path / "in", bits, stored, signed, n=5, rows=33, cols=17))
    planes = planes_of(geom)
    assert planes is not None and planes.shape == (17, 33, 5)
    volume = read_volume(geom)
    plane_bytes = 17 * 33 * bits // 8
    chunks = [bytes(c) for c in planes.chunks(max_bytes=2 * plane_bytes)]  # 2 + 2 + 1 planes
    assert [len(c) // plane_bytes for c in chunks] == [2, 2, 1]
    assert b"".join(chunks) == memoryview(volume.data.T).cast("B").tobytes()
    streamed = write_nifti(planes, geom.affine, tmp_path / "streamed" / name)
    whole = write_nifti(volume, geom.affine, tmp_path / "whole" / name)
    assert streamed.path.read_bytes() == whole.path.read_bytes() and streamed.sha256 == whole.sha256


def test_streamed_file_cut_short_leaves_no_output(tmp_path: Path):
    geom = _geometry(_series(tmp_path / "in", 16, 12, False))
    victim = geom.frames[-1].path
    victim.write_bytes(victim.read_bytes()[:-7])
    planes = planes_of(geom)
    assert planes is not None
    with pytest.raises(ValueError, match="pixel data shorter than declared"):
        write_nifti(planes, geom.affine, tmp_path / "out" / "a.nii")
    assert list((tmp_path / "out").iterdir()) == []  # neither the file nor its .part


def test_direct_planes_only_for_uniform_uncompressed_stacks(tmp_path: Path):
    geom = _geometry(_series(tmp_path / "in", 16, 12, False, slopes=((1.0, -1024.0), (2.0, 5.0))))
    assert planes_of(geom) is None  # per-frame rescale: physical floats, read_volume's job


def test_stack_cut_short_after_the_scan_is_quarantined_without_output(tmp_path: Path):
    from tl_med.ingest.stacks import StackJob, convert_stack
    from tl_med.sites import IngestOptions

    geom = _geometry(_series(tmp_path / "in", 16, 12, False))
    victim = geom.frames[1].path
    victim.write_bytes(victim.read_bytes()[:-7])
    job = StackJob(cid="case", frames=tuple(geom.frames), fingerprint="fp")
    outcome = convert_stack(job, out=tmp_path / "out", root=tmp_path, opts=IngestOptions(compresslevel=0), key=b"k" * 32)
    assert outcome.reason.startswith("series pixel data unusable") and not outcome.record
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


@pytest.mark.parametrize("name", ["a.nii", "a.nii.gz"])
def test_drop_behind_writing_changes_no_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str):
    from tl_med.ingest import convert

    rng = np.random.default_rng(0)
    vol = Volume(np.asfortranarray(rng.integers(-1024, 3000, (64, 48, 40)).astype(np.int16)), 1.0, -1024.0)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    plain = write_nifti(vol, affine, tmp_path / "plain" / name)
    monkeypatch.setattr(convert, "_DROP_STEP", 4096)  # a 240 kB volume now takes the drop-behind path
    monkeypatch.setattr(convert, "_DROP_LAG", 2)
    monkeypatch.setattr(convert, "_CHUNK", 5000)
    dropped = write_nifti(vol, affine, tmp_path / "dropped" / name)
    assert dropped.path.read_bytes() == plain.path.read_bytes() and dropped.sha256 == plain.sha256
