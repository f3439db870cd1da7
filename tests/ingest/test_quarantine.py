"""Every kind of bad input gets a one-line reason naming the file; the rest of the site ingests."""

import shutil

import nibabel as nib
import numpy as np
import pydicom

from tests.ingest import corrupt
from tl_med.ingest.site import ingest_site
from tl_med.manifests import load_manifest
from tl_med.sites import load_sites


def test_every_bad_input_is_quarantined_with_its_reason(workspace):
    ws, sites_file = workspace
    site = load_sites(sites_file, ws.root).get("east")
    dicom, labels = site.dicom_dir, site.labels_dir
    series = sorted(dicom.iterdir())
    donor = sorted((series[0] / "series_1").iterdir())[0]
    junk = dicom / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not dicom at all")
    for name in ("bad_vr", "no_transfer_syntax", "broken_sequence", "short_pixels", "truncated_header"):
        getattr(corrupt, name)(donor, junk / name)
    sorted((series[1] / "series_1").iterdir())[4].unlink()  # a series with a missing slice
    label_files = [labels / f"{pydicom.dcmread(next((s / 'series_1').iterdir())).SeriesInstanceUID}.nii.gz"
                   for s in series]  # in study order
    img = nib.load(label_files[2])
    data = np.asarray(img.dataobj).copy()
    nib.save(nib.Nifti1Image(data[:-1], img.affine), label_files[2])  # wrong shape
    shifted = img.affine.copy()
    shifted[0, 3] += 5
    nib.save(nib.Nifti1Image(data, shifted), label_files[3])  # wrong geometry
    data[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(data, img.affine), label_files[4])  # unexpected values

    result = ingest_site(site, ws, task="liver")
    summary = result.report.summary()
    reasons = {o.file: o.reason for o in result.report.quarantined}
    assert summary["reconciled"] and summary["skipped"] == 0
    expected = {
        "dicom/junk/notes.txt": "not a DICOM file",
        "dicom/junk/bad_vr": "Unknown Value Representation",
        "dicom/junk/no_transfer_syntax": "no Transfer Syntax UID",
        "dicom/junk/broken_sequence": "broken sequence",
        "dicom/junk/short_pixels": "file truncated (Pixel Data declares 2048 bytes, 1948 present)",
        "dicom/junk/truncated_header": "image without Pixel Data",
        f"labels/{label_files[2].name}": "label shape (31, 32, 10) does not match image shape (32, 32, 10)",
        f"labels/{label_files[3].name}": "label geometry does not match its image",
        f"labels/{label_files[4].name}": "unexpected values [7]",
    }
    for file, words in expected.items():
        assert words in reasons[file], (file, reasons.get(file))
        assert "\n" not in reasons[file]
    gap = [r for f, r in reasons.items() if f.startswith(f"dicom/{series[1].name}/")]
    assert len(gap) == 9 and all("missing slice" in r for r in gap)
    # the donor's own series and the other studies still ingest
    manifest = load_manifest(result.manifest_path)
    assert manifest.n_labelled == 1 and len(manifest.unlabelled) == 3
    assert summary["quarantined"] == len(expected) + 9 + 1  # + the gapped series's label


def test_resample_policy_keeps_a_gapped_series_and_flags_it(workspace):
    ws, sites_file = workspace
    site = load_sites(sites_file, ws.root).get("east")
    site = site.model_copy(update={"ingest": site.ingest.model_copy(update={"geometry": "resample"})})
    gapped = sorted(site.dicom_dir.iterdir())[1] / "series_1"
    sorted(gapped.iterdir())[2].unlink()
    result = ingest_site(site, ws, task="liver")
    manifest = load_manifest(result.manifest_path)
    flagged = [c for c in (*manifest.training, *manifest.validation, *manifest.test, *manifest.unlabelled)
               if c.resampled]
    assert len(flagged) == 1 and "missing slice" in flagged[0].resampled
    assert flagged[0].shape == (32, 32, 10)  # back on the regular grid
    assert result.report.summary()["quarantined"] == 0


def test_reingest_converts_only_what_is_new(workspace, tiny_incoming):
    ws, sites_file = workspace
    site = load_sites(sites_file, ws.root).get("east")
    extra = sorted(site.dicom_dir.iterdir())[-1]
    held_back = ws.root / "held"
    shutil.move(extra, held_back)
    first = ingest_site(site, ws, task="liver").report.summary()
    again = ingest_site(site, ws, task="liver").report.summary()
    shutil.move(held_back, extra)
    grown = ingest_site(site, ws, task="liver").report.summary()
    assert (first["volumes_converted_now"], first["volumes_unchanged"]) == (4, 0)
    assert (again["volumes_converted_now"], again["volumes_unchanged"]) == (0, 4)
    assert (grown["volumes_converted_now"], grown["volumes_unchanged"]) == (1, 4)
    assert grown["reconciled"] and grown["converted"] == first["converted"] + 10 + 1
