"""Lose nothing valid: copies of an instance convert once, repeated acquisitions split, raw datasets
are read, and labels drawn on another tool's grid or kept in their own folder are all used."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.data
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset
from pydicom.uid import generate_uid

from tl_med.ingest.site import ingest_site
from tl_med.manifests import load_manifest
from tl_med.sites import SiteConfig, SplitSpec


def _testdata(name: str) -> Path:
    return Path(pydicom.data.get_testdata_file(name, download=False))


def _raw(ds: pydicom.Dataset, path: Path) -> None:
    """``ds`` as a bare dataset: no preamble, no DICM prefix, no file meta (pydicom's rtstruct.dcm is so)."""
    buffer = io.BytesIO()
    out = DicomFileLike(buffer)
    out.is_little_endian, out.is_implicit_VR = True, True
    write_dataset(out, ds)
    path.write_bytes(buffer.getvalue())


def _series(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_copies_convert_once_repeats_split_conflicts_quarantine_and_raw_datasets_are_read(tmp_path, tiny_incoming):
    dicom = tmp_path / "site" / "dicom"
    # the same MR image in five transfer syntaxes: one SOP Instance UID, the same pixels
    syntaxes = ["MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm",
                "MR_small_implicit.dcm"]
    (dicom / "mr").mkdir(parents=True)
    for name in syntaxes:
        shutil.copy(_testdata(name), dicom / "mr" / name)
    shutil.copy(_testdata("rtstruct.dcm"), dicom / "rtstruct.dcm")  # a real raw dataset (no preamble)
    # a 10-slice series with one slice stored twice (an exact copy under another name)
    study = tiny_incoming / "east" / "dicom" / "study_0001"
    shutil.copytree(study, dicom / "ct")
    slices = _series(dicom / "ct")
    shutil.copy(slices[3], slices[3].with_name("copy-of-slice"))
    # a second acquisition at the same positions (AcquisitionNumber 2, new instances): its own volume
    (dicom / "repeat").mkdir()
    series_uid = generate_uid()
    for k, path in enumerate(_series(tiny_incoming / "east" / "dicom" / "study_0002")):
        for acquisition in (1, 2):
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.AcquisitionNumber = series_uid, generate_uid(), acquisition
            ds.PixelData = (ds.pixel_array + 5 * acquisition).astype(ds.pixel_array.dtype).tobytes()
            ds.save_as(dicom / "repeat" / f"{k:02d}-{acquisition}.dcm", enforce_file_format=True)
    # one SOP Instance UID, two different images: neither can be trusted
    conflict = pydicom.dcmread(_testdata("CT_small.dcm"))
    conflict.save_as(dicom / "conflict-a.dcm", enforce_file_format=True)
    conflict.PixelData = (conflict.pixel_array + 1).astype(conflict.pixel_array.dtype).tobytes()
    conflict.save_as(dicom / "conflict-b.dcm", enforce_file_format=True)
    # a bare MR image without preamble or file meta: read as dcm2niix would
    raw = pydicom.dcmread(_testdata("MR_small.dcm"))
    raw.SOPInstanceUID, raw.SeriesInstanceUID = generate_uid(), generate_uid()
    _raw(raw, dicom / "raw-mr")

    site = SiteConfig(name="lake", dicom_dir=dicom, split=SplitSpec(n_train=1, n_val=0))
    from tl_med.workspace import Workspace

    result = ingest_site(site, Workspace(tmp_path / "ws").ensure(), task="liver")
    report = result.report
    outcomes = {o.file: o for o in report.outcomes.values()}
    assert report.summary()["reconciled"] and report.summary()["inputs"] == 5 + 1 + 11 + 20 + 2 + 1

    kept = outcomes["dicom/mr/MR_small.dcm"]  # the uncompressed copy is the one converted
    assert kept.outcome == "converted"
    for name in syntaxes[1:]:
        o = outcomes[f"dicom/mr/{name}"]
        assert o.outcome == "skipped" and o.reason.startswith(f"duplicate of {report.ref('dicom/mr/MR_small.dcm')}")
    assert outcomes["dicom/rtstruct.dcm"].outcome == "skipped" and "RTSTRUCT" in outcomes["dicom/rtstruct.dcm"].reason
    ct = [o for f, o in outcomes.items() if f.startswith("dicom/ct/")]
    assert sum(o.outcome == "converted" for o in ct) == 10 and sum(o.outcome == "skipped" for o in ct) == 1
    repeat = [o for f, o in outcomes.items() if f.startswith("dicom/repeat/")]
    assert all(o.outcome == "converted" for o in repeat) and len({o.case_id for o in repeat}) == 2
    for name in ("conflict-a.dcm", "conflict-b.dcm"):
        assert outcomes[f"dicom/{name}"].outcome == "quarantined"
        assert "SOP Instance UID shared by 2 files whose pixel data or geometry differ" in outcomes[f"dicom/{name}"].reason
    assert outcomes["dicom/raw-mr"].outcome == "converted"
    assert result.n_unlabelled == 1 + 1 + 2 + 1  # MR, CT, two acquisitions, raw MR


def test_labels_in_their_own_folder_with_the_slice_axis_reversed_are_all_used(tmp_path, tiny_incoming):
    dicom = tmp_path / "pacs-export" / "east"
    shutil.copytree(tiny_incoming / "east" / "dicom", dicom)
    labels = tmp_path / "annotations" / "liver masks"  # nowhere near the DICOM folder's parent
    labels.mkdir(parents=True)
    originals = sorted((tiny_incoming / "east" / "labels").glob("*.nii.gz"))
    for path in originals:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
        affine = img.affine.copy()  # dcm2niix's view of the series: the slice axis runs the other way
        affine[:3, 3] = img.affine[:3, :3] @ [0, 0, data.shape[2] - 1] + img.affine[:3, 3]
        affine[:3, 2] *= -1
        nib.save(nib.Nifti1Image(data[:, :, ::-1].copy(), affine), labels / path.name)
    (labels / "notes.txt").write_text("not a mask")
    site = SiteConfig(name="east", dicom_dir=dicom, labels_dir=labels, split=SplitSpec(n_train=2, n_val=1))
    from tl_med.workspace import Workspace

    ws = Workspace(tmp_path / "ws").ensure()
    result = ingest_site(site, ws, task="liver")
    assert result.n_labelled == len(originals) == 5 and result.report.summary()["reconciled"]
    notes = {o.file: o for o in result.report.outcomes.values() if o.file.startswith("liver masks/")}
    assert len(notes) == 6 and notes["liver masks/notes.txt"].outcome == "quarantined"
    assert all(o.reason == "label reoriented onto its image's grid (axis 2 reversed)"
               for f, o in notes.items() if f.endswith(".nii.gz"))
    manifest = load_manifest(result.manifest_path)
    for case in (*manifest.training, *manifest.validation, *manifest.test):
        written = nib.load(result.manifest_path.parent / case.label)
        image = nib.load(result.manifest_path.parent / case.image)
        assert np.allclose(written.affine, image.affine) and np.asanyarray(written.dataobj).any()
    # the reoriented masks equal the originals on the image grid
    sums = sorted(int(np.asanyarray(nib.load(result.manifest_path.parent / c.label).dataobj).sum())
                  for c in (*manifest.training, *manifest.validation, *manifest.test))
    assert sums == sorted(int(np.asanyarray(nib.load(p).dataobj).sum()) for p in originals)
