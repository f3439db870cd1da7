"""DICOM SEG labels: a SEG made with highdicom from a synthetic study's ground truth ingests to the
same label volume as the NIfTI mask it was made from, wherever its frames sit."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from tl_med.ingest.site import ingest_site
from tl_med.manifests import load_manifest
from tl_med.sites import load_sites
from tl_med.workspace import Workspace
from conftest import make_seg, series_of as _series


def _truth(incoming: Path, study: Path) -> tuple[np.ndarray, str]:
    uid = _series(study)[0].SeriesInstanceUID
    label = np.asarray(nib.load(incoming / "east" / "labels" / f"{uid}.nii.gz").dataobj)
    return label, uid


@pytest.fixture
def seg_site(tmp_path, tiny_incoming):
    """East's first two studies; study 1 labelled by a SEG (no NIfTI), study 2 by its NIfTI mask."""
    ws = Workspace(tmp_path / "ws").ensure()
    dicom, labels = ws.incoming / "east" / "dicom", ws.incoming / "east" / "labels"
    labels.mkdir(parents=True)
    for name in ("study_0001", "study_0002"):
        shutil.copytree(tiny_incoming / "east" / "dicom" / name, dicom / name)
    truth1, uid1 = _truth(tiny_incoming, dicom / "study_0001")
    truth2, uid2 = _truth(tiny_incoming, dicom / "study_0002")
    shutil.copy(tiny_incoming / "east" / "labels" / f"{uid2}.nii.gz", labels)
    sites_file = tmp_path / "sites.yaml"
    sites_file.write_text(yaml.safe_dump({"task": "liver", "sites": [
        {"name": "north", "role": "source", "dicom_dir": "incoming/north/dicom", "labels_dir": "incoming/north/labels"},
        {"name": "east", "dicom_dir": "incoming/east/dicom", "labels_dir": "incoming/east/labels",
         "split": {"n_train": 1, "n_val": 0}}]}))
    return ws, load_sites(sites_file, ws.root).get("east"), truth1, uid1


def _labels_of(ws: Workspace) -> dict[str, np.ndarray]:
    manifest = load_manifest(ws.site_manifest("east"))
    base = ws.site_manifest("east").parent
    return {c.case_id: np.asarray(nib.load(base / c.label).dataobj)
            for c in (*manifest.training, *manifest.validation, *manifest.test)}


@pytest.mark.parametrize("omit_empty", [True, False])
def test_a_seg_becomes_the_label_of_its_series(seg_site, omit_empty):
    ws, east, truth, _ = seg_site
    seg = make_seg(ws.incoming / "east" / "dicom" / "study_0001", np.stack([truth[:, :, k].T for k in
                                                                             range(truth.shape[2])]), omit_empty=omit_empty)
    seg.save_as(ws.incoming / "east" / "dicom" / "study_0001" / "seg.dcm")
    result = ingest_site(east, ws, task="liver")
    assert result.n_labelled == 2 and result.report.summary()["reconciled"]
    seg_outcome = next(o for o in result.report.outcomes.values() if o.file.endswith("seg.dcm"))
    assert seg_outcome.outcome == "converted"
    label = _labels_of(ws)[seg_outcome.case_id]
    assert np.array_equal(label, truth), "the SEG lands voxel for voxel where its NIfTI twin does"


def test_a_nifti_label_takes_precedence_and_a_bad_seg_is_quarantined(seg_site, tiny_incoming):
    ws, east, truth, uid = seg_site
    study = ws.incoming / "east" / "dicom" / "study_0001"
    mask = np.stack([truth[:, :, k].T for k in range(truth.shape[2])])
    make_seg(study, mask, segment=2).save_as(study / "two-segments.dcm")  # segment 2 has no label value
    result = ingest_site(east, ws, task="liver")
    outcome = next(o for o in result.report.outcomes.values() if o.file.endswith("two-segments.dcm"))
    assert outcome.outcome == "quarantined" and "segment numbers [2] without a label value" in outcome.reason
    assert result.n_labelled == 1  # that study stays unlabelled, the other is labelled

    shutil.copy(tiny_incoming / "east" / "labels" / f"{uid}.nii.gz", ws.incoming / "east" / "labels")
    result = ingest_site(east, ws, task="liver")
    outcome = next(o for o in result.report.outcomes.values() if o.file.endswith("two-segments.dcm"))
    assert outcome.outcome == "skipped" and "NIfTI label in labels_dir takes precedence" in outcome.reason
    assert result.n_labelled == 2


def test_a_seg_of_a_series_that_is_not_there_is_quarantined(seg_site, tiny_incoming):
    ws, east, _, _ = seg_site
    other = tiny_incoming / "east" / "dicom" / "study_0003"
    truth, _ = _truth(tiny_incoming, other)
    make_seg(other, np.stack([truth[:, :, k].T for k in range(truth.shape[2])])).save_as(
        ws.incoming / "east" / "dicom" / "orphan-seg.dcm")
    result = ingest_site(east, ws, task="liver")
    outcome = next(o for o in result.report.outcomes.values() if o.file.endswith("orphan-seg.dcm"))
    assert outcome.outcome == "quarantined" and outcome.reason == "DICOM SEG references no ingested series"
