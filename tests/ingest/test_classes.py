"""Case-level classes: a class CSV keyed like the masks, reconciled row by row in the ingest report."""

from __future__ import annotations

import json
import shutil

import pydicom
import pytest

from tl_med.ingest.classes import parse_rows
from tl_med.ingest.site import ingest_site
from tl_med.manifests import datalist, load_manifest
from tl_med.sites import SitesConfig
from tl_med.workspace import Workspace

CLASSES = ("normal", "fatty")


def _first(folder):
    return pydicom.dcmread(next(p for p in sorted(folder.rglob("*")) if p.is_file()), stop_before_pixels=True)


def test_rows_pair_by_series_study_or_accession_and_every_bad_row_has_its_reason(tmp_path, tiny_incoming):
    incoming = tmp_path / "incoming"
    shutil.copytree(tiny_incoming / "east", incoming / "east")
    studies = [_first(incoming / "east" / "dicom" / f"study_{k:04d}") for k in range(1, 6)]
    rows = [("key", "class"),
            (studies[0].StudyInstanceUID, "fatty"),       # row 1: by study
            (studies[1].SeriesInstanceUID, "normal"),     # row 2: by series
            (studies[2].AccessionNumber, "fatty"),        # row 3: by accession
            (studies[3].StudyInstanceUID, "steatosis"),   # row 4: not a class of the task
            (studies[4].StudyInstanceUID, "normal"),      # row 5: the same key twice ...
            (studies[4].StudyInstanceUID, "fatty"),       # row 6: ... which one is right?
            ("1.2.3.4.5.6.7.8.9", "normal"),              # row 7: matches nothing
            ("", "normal")]                               # row 8: no key
    (incoming / "east" / "classes.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    ws = Workspace(tmp_path / "ws").ensure()
    sites = SitesConfig.model_validate({"classes": CLASSES, "sites": [
        {"name": "east", "role": "source", "dicom_dir": str(incoming / "east" / "dicom"),
         "labels_dir": str(incoming / "east" / "labels"), "classes_csv": str(incoming / "east" / "classes.csv"),
         "split": {"n_train": 2, "n_val": 1}}]})
    result = ingest_site(sites.get("east"), ws, **sites.task_fields())
    report = result.report
    assert report.summary()["reconciled"] and report.summary()["inputs"] == 50 + 5 + 8
    outcome = {o.file: o for o in report.outcomes.values() if "#row" in o.file}
    assert [outcome[f"classes.csv#row{n}"].outcome for n in range(1, 9)] == \
        ["converted"] * 3 + ["quarantined"] * 5
    assert outcome["classes.csv#row4"].reason == "unknown class (the task's classes: normal, fatty)"
    assert outcome["classes.csv#row5"].reason.startswith("duplicate key (also in row 6)")
    assert outcome["classes.csv#row6"].reason.startswith("duplicate key (also in row 5)")
    assert outcome["classes.csv#row7"].reason.startswith("key matches no converted series")
    assert outcome["classes.csv#row8"].reason == "row without a key"
    manifest = load_manifest(result.manifest_path)
    assert manifest.classes == CLASSES
    cases = [*manifest.training, *manifest.validation, *manifest.test]
    assert sorted(c.case_class or "-" for c in cases) == ["-", "-", "fatty", "fatty", "normal"]
    items = [it for split in ("training", "validation", "test") for it in datalist(result.manifest_path, split)]
    assert sorted(it.get("class", -1) for it in items) == [-1, -1, 0, 1, 1]  # indices into the task's classes
    text = result.manifest_path.read_text() + (ws.reports / "east" / "ingest-report.json").read_text()
    for study in studies:  # keys never reach the workspace
        assert study.StudyInstanceUID not in text and study.SeriesInstanceUID not in text
        assert study.AccessionNumber not in text


def test_an_unusable_class_csv_is_one_quarantined_input_and_the_images_still_ingest(tmp_path, tiny_incoming):
    incoming = tmp_path / "incoming"
    shutil.copytree(tiny_incoming / "east", incoming / "east")
    (incoming / "east" / "classes.csv").write_text("series,label\n1.2,fatty\n")
    sites = SitesConfig.model_validate({"classes": CLASSES, "sites": [
        {"name": "east", "role": "source", "dicom_dir": str(incoming / "east" / "dicom"),
         "labels_dir": str(incoming / "east" / "labels"), "classes_csv": str(incoming / "east" / "classes.csv")}]})
    result = ingest_site(sites.get("east"), Workspace(tmp_path / "ws").ensure(), **sites.task_fields())
    reasons = {o.file: o.reason for o in result.report.quarantined}
    assert reasons == {"classes.csv": "class CSV unusable: needs a header row with the columns key and class"}
    assert result.n_labelled == 5 and result.report.summary()["reconciled"]


def test_a_datalist_items_class_is_kept_or_quarantined(tmp_path):
    from tests.multichannel import AFFINE, case

    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    items = []
    for k, klass in enumerate(["fatty", "normal", "cirrhosis"]):
        image, label = case(rng)
        nib.save(nib.Nifti1Image(image[..., 0], AFFINE), tmp_path / f"i{k}.nii.gz")
        nib.save(nib.Nifti1Image((label > 0).astype(np.uint8), AFFINE), tmp_path / f"l{k}.nii.gz")
        items.append({"image": f"i{k}.nii.gz", "label": f"l{k}.nii.gz", "class": klass})
    (tmp_path / "datalist.json").write_text(json.dumps({"training": items}))
    sites = SitesConfig.model_validate({"classes": CLASSES, "sites": [
        {"name": "lake", "role": "source", "datalist": str(tmp_path / "datalist.json"), "split": {"n_train": 3, "n_val": 0}}]})
    result = ingest_site(sites.get("lake"), Workspace(tmp_path / "ws").ensure(), **sites.task_fields())
    assert result.report.summary()["reconciled"] and result.report.summary()["inputs"] == 9
    assert {o.file: o.reason for o in result.report.quarantined} == {
        "datalist.json#training.2.class": "unknown class (the task's classes: normal, fatty)"}
    assert sorted(c.case_class or "-" for c in load_manifest(result.manifest_path).training) == ["-", "fatty", "normal"]


@pytest.mark.parametrize("text, rows", [("key,class\n", 0), ("KEY, Class\n a , b \n\n", 1), ("class,key,x\nb,a,c\n", 1)])
def test_class_csv_header_is_found_by_name(text, rows):
    parsed = parse_rows(text)
    assert len(parsed) == rows and all((r.key, r.value) == ("a", "b") for r in parsed)
