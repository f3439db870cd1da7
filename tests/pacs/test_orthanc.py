"""A real Orthanc on loopback (temporary config and storage, free ports), fed by dcmtk's storescu
the way a modality sends: pull and ingest, resume, bad credentials, non-image objects and the
change feed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pydicom
import pytest
import yaml
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tl_med.errors import InputError
from tl_med.ingest.site import ingest_site
from tl_med.pacs.changes import PacsWatcher
from tl_med.pacs.local import free_port, local_orthanc, orthanc_binary, send
from tl_med.pacs.orthanc import OrthancClient
from tl_med.pacs.pull import pacs_folder, pull_site
from tl_med.sites import load_sites
from tl_med.workspace import Workspace

USER, PASSWORD = "tlmed", "QXPACSPASSWORD"

need = [name for name, found in (("Orthanc", orthanc_binary()), ("storescu", shutil.which("storescu"))) if not found]
if need and not os.environ.get("CI"):
    pytest.skip(f"{', '.join(need)} not installed (make test installs orthanc and dcmtk as root)",
                allow_module_level=True)


@pytest.fixture
def orthanc(tmp_path):
    """Orthanc with authentication, its own storage, StableAge 2 s; yields (REST URL, DICOM port)."""
    with local_orthanc(tmp_path / "orthanc", USER, PASSWORD) as pacs:
        yield pacs.url, pacs.dicom_port


@pytest.fixture
def pacs_site(tmp_path, tiny_incoming, orthanc, monkeypatch):
    """A workspace whose site 'east' has no files, only a PACS source (credentials in the environment)
    and the labels of its studies; Orthanc holds 3 east studies and 1 north study."""
    url, port = orthanc
    ws = Workspace(tmp_path / "ws").ensure()
    labels = ws.incoming / "east" / "labels"
    labels.mkdir(parents=True)
    for study in ("study_0001", "study_0002", "study_0003"):  # the labels of the studies sent below
        first = next((tiny_incoming / "east" / "dicom" / study).rglob("*"))
        while first.is_dir():
            first = next(first.iterdir())
        uid = pydicom.dcmread(first, stop_before_pixels=True).SeriesInstanceUID
        shutil.copy(tiny_incoming / "east" / "labels" / f"{uid}.nii.gz", labels)
    sites_file = tmp_path / "sites.yaml"
    sites_file.write_text(yaml.safe_dump({"task": "liver", "sites": [
        {"name": "north", "role": "source", "dicom_dir": "incoming/north/dicom", "labels_dir": "incoming/north/labels"},
        {"name": "east", "role": "target", "dicom_dir": "incoming/east/dicom", "labels_dir": "incoming/east/labels",
         "split": {"n_train": 1, "n_val": 1},
         "pacs": {"url": url, "username_env": "TEST_PACS_USER", "password_env": "TEST_PACS_PASSWORD",
                  "query": {"modality": "CT", "tags": {"PatientID": "FAKEPID-EAST-*"}}}}]}))
    monkeypatch.setenv("TEST_PACS_USER", USER)
    monkeypatch.setenv("TEST_PACS_PASSWORD", PASSWORD)
    for study in ("study_0001", "study_0002", "study_0003"):
        send(tiny_incoming / "east" / "dicom" / study, port)
    send(tiny_incoming / "north" / "dicom" / "study_0001", port)
    return ws, sites_file, url, port


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tl_med.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_ingest_pulls_the_sites_studies_once_and_never_writes_the_credentials(pacs_site):
    ws, sites_file, _, _ = pacs_site
    env = {**os.environ, "TL_MED_HOME": str(ws.root)}
    first = _cli("ingest", "--site", "east", "--sites", str(sites_file), env=env)
    assert first.returncode == 0, first.stderr
    assert "east: 3 studies match in the PACS; 0 already here, 3 pulled now (30 instances" in first.stdout
    assert "33 inputs = 33 converted" in first.stdout  # 30 slices + 3 labels and "3 labelled cases" in first.stdout
    manifest = json.loads(ws.site_manifest("east").read_text())
    assert len(manifest["training"]) + len(manifest["validation"]) + len(manifest["test"]) == 3

    again = _cli("ingest", "--site", "east", "--sites", str(sites_file), env=env)
    assert "3 already here, 0 pulled now (0 instances" in again.stdout
    assert "0 volumes converted now, 3 unchanged" in again.stdout
    for path in ws.root.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path


class FailAfter(httpx.HTTPTransport):
    """A real transport whose instance downloads fail after ``n`` (a connection lost mid-pull)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.left, self.lock = n, threading.Lock()  # the pull fetches a study's instances in threads

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/file"):
            with self.lock:
                if self.left <= 0:
                    raise httpx.ReadError("connection reset", request=request)
                self.left -= 1
        return super().handle_request(request)


def test_an_interrupted_pull_resumes_without_fetching_anything_twice(pacs_site):
    ws, sites_file, url, _ = pacs_site
    east = load_sites(sites_file, ws.root).get("east")
    broken = OrthancClient(url, (USER, PASSWORD), transport=FailAfter(15))
    first = pull_site(east, ws, client=broken)
    assert first.instances == 15 and first.pulled == 1 and len(first.failed) == 2
    assert all("not reachable while downloading an instance" in line for line in first.failed)
    assert len(list(pacs_folder(east).glob(".partial-*"))) == 2
    ingested = ingest_site(east, ws, task="liver")  # only the complete study is an input yet
    assert ingested.n_labelled == 1 and ingested.n_unlabelled == 0

    second = pull_site(east, ws)
    assert second.instances == 30 - 15 and second.pulled == 2 and second.already == 1 and not second.failed
    assert not list(pacs_folder(east).glob(".partial-*"))
    assert ingest_site(east, ws, task="liver").n_labelled == 3


def test_a_pull_with_another_key_fetches_nothing_already_in_the_folder(pacs_site):
    ws, sites_file, _, _ = pacs_site
    east = load_sites(sites_file, ws.root).get("east")
    assert pull_site(east, ws).instances == 30
    (ws.data / "east" / "pacs-state.json").unlink()  # a new machine, or a rotated key: no pull state
    again = pull_site(east, ws, key=b"another workspace's key")
    assert again.instances == 0 and again.present == 30 and not again.failed
    assert "30 instances were already in the folder" in again.line()
    result = ingest_site(east, ws, task="liver")
    assert result.n_labelled == 3 and result.report.summary()["quarantined"] == 0


def test_wrong_credentials_and_an_unreachable_pacs_are_one_clear_error(pacs_site, monkeypatch):
    ws, sites_file, url, _ = pacs_site
    east = load_sites(sites_file, ws.root).get("east")
    monkeypatch.setenv("TEST_PACS_PASSWORD", "wrong")
    with pytest.raises(InputError, match=rf"PACS {url}: credentials rejected \(HTTP 401\) while finding studies"):
        pull_site(east, ws)
    monkeypatch.delenv("TEST_PACS_PASSWORD")
    with pytest.raises(InputError, match="credential environment variable\\(s\\) TEST_PACS_PASSWORD not set"):
        pull_site(east, ws)
    down = east.model_copy(update={"pacs": east.pacs.model_copy(update={"url": f"http://127.0.0.1:{free_port()}"})})
    monkeypatch.setenv("TEST_PACS_PASSWORD", PASSWORD)
    with pytest.raises(InputError, match="is not reachable while finding studies") as err:
        pull_site(down, ws)
    assert PASSWORD not in str(err.value) and not any(pacs_folder(east).glob("*"))


def test_a_non_image_object_in_a_study_is_skipped_with_a_reason(pacs_site, tmp_path):
    ws, sites_file, _, port = pacs_site
    east = load_sites(sites_file, ws.root).get("east")
    pull_site(east, ws)
    one = pydicom.dcmread(next(pacs_folder(east).glob("*/*.dcm")), stop_before_pixels=True)
    sr = _basic_text_sr(one)
    sr_dir = tmp_path / "sr"
    sr_dir.mkdir()
    sr.save_as(sr_dir / "sr.dcm", enforce_file_format=True)
    send(sr_dir, port)
    report = pull_site(east, ws)
    assert report.pulled == 1 and report.instances == 1  # the study grew by one object
    result = ingest_site(east, ws, task="liver")
    skipped = [r for r in result.report.outcomes.values() if r.outcome == "skipped"]
    assert len(skipped) == 1 and "non-image object (Modality SR" in skipped[0].reason
    assert result.n_labelled == 3


def _basic_text_sr(image: Dataset) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "AccessionNumber", "StudyID"):
        setattr(ds, keyword, getattr(image, keyword, ""))
    ds.Modality = "SR"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    return ds


def test_the_change_feed_announces_each_new_stable_study_of_the_site_once(pacs_site, tiny_incoming):
    ws, sites_file, url, port = pacs_site
    sites = load_sites(sites_file, ws.root)

    def all_stable() -> bool:
        found = httpx.post(f"{url}/tools/find", auth=(USER, PASSWORD), json={"Level": "Study", "Query": {},
                                                                             "Expand": True}).json()
        return all(s["IsStable"] for s in found)

    while not all_stable():  # the fixture's studies are old news once stable (StableAge 2 s)
        time.sleep(0.5)
    watcher = PacsWatcher(sites, ws)
    assert watcher.poll() == []  # starts at the feed's end: what is already there is the pull's backlog
    send(tiny_incoming / "east" / "dicom" / "study_0004", port)
    send(tiny_incoming / "north" / "dicom" / "study_0002", port)  # another site's study: no event for east
    cursor = ws.root / "pacs" / "east-cursor.json"
    deadline = time.monotonic() + 30
    while json.loads(cursor.read_text())["pending"] == 0:  # the site is busy: the news is kept...
        assert watcher.poll(busy=lambda site: True) == [] and time.monotonic() < deadline
        time.sleep(0.5)
    found = watcher.poll()  # ...and announced once it is not
    assert [(d.site, d.n_images) for d in found] == [("east", 1)]
    time.sleep(3)
    assert watcher.poll() == [] and PacsWatcher(sites, ws).poll() == [], "the cursor is kept in the workspace"
    assert json.loads((ws.root / "pacs" / "east-cursor.json").read_text())["pending"] == 0


def test_a_prediction_stored_back_is_not_news_but_a_readers_seg_is(pacs_site, tiny_incoming, tmp_path):
    """tl_med's own SEG makes its study stable again without starting another retrain; a SEG from
    anyone else (a reader's annotation) is new data for the site."""
    from conftest import make_seg, series_of

    from tl_med.own_segs import PREDICTION_MANUFACTURER

    ws, sites_file, url, port = pacs_site
    sites = load_sites(sites_file, ws.root)
    watcher = PacsWatcher(sites, ws)
    assert watcher.poll() == []
    study = tiny_incoming / "east" / "dicom" / "study_0001"  # already in the PACS
    mask = np.zeros((len(series_of(study)), *series_of(study)[0].pixel_array.shape), dtype=bool)
    mask[:, 2:5, 2:5] = True

    def announced_after(manufacturer: str) -> list:
        seg = make_seg(study, mask)
        seg.Manufacturer = manufacturer
        folder = tmp_path / manufacturer.replace(" ", "_")
        folder.mkdir()
        seg.save_as(folder / "seg.dcm")
        send(folder, port)
        series = httpx.get(f"{url}/series", auth=(USER, PASSWORD)).json()
        deadline = time.monotonic() + 30
        while not all(httpx.get(f"{url}/series/{s}", auth=(USER, PASSWORD)).json()["IsStable"] for s in series):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        time.sleep(1)
        return watcher.poll()

    assert announced_after(PREDICTION_MANUFACTURER) == []
    assert [(d.site, d.n_images) for d in announced_after("a reader")] == [("east", 1)]


def test_a_seg_sent_with_a_study_labels_it(pacs_site, tiny_incoming, tmp_path):
    """Studies whose segmentation is stored in the PACS as DICOM SEG come out labelled."""
    import nibabel as nib

    from conftest import make_seg, series_of

    ws, sites_file, _, port = pacs_site
    east = load_sites(sites_file, ws.root).get("east")
    study = tiny_incoming / "east" / "dicom" / "study_0004"
    uid = series_of(study)[0].SeriesInstanceUID
    truth = np.asarray(nib.load(tiny_incoming / "east" / "labels" / f"{uid}.nii.gz").dataobj)
    seg_dir = tmp_path / "seg"
    seg_dir.mkdir()
    make_seg(study, np.stack([truth[:, :, k].T for k in range(truth.shape[2])])).save_as(seg_dir / "seg.dcm")
    send(study, port)
    send(seg_dir, port)
    assert pull_site(east, ws).pulled == 4
    result = ingest_site(east, ws, task="liver")
    assert result.n_labelled == 4 and result.n_unlabelled == 0  # 3 NIfTI labels + 1 SEG
