"""The ``site-inference`` flow against a real Orthanc: new stable studies of a site segmented by its
champion, each SEG stored with its study, a Prefect artifact, nothing twice and nothing identifying
in Prefect or the workspace."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pydicom
import pytest
import torch
import yaml

from tests.phi import PLANTED, plant_phi, text_of
from tests.validators import dciodvfy_errors
from tl_med.config import InferenceConfig, NetworkConfig, PreprocessConfig
from tl_med.ingest.report import IngestReport
from tl_med.ingest.scan import scan_dicom_tree
from tl_med.models.spec import ModelSpec
from tl_med.models.zoo import build_network
from tl_med.pacs.local import local_orthanc, orthanc_binary, send
from tl_med.pacs.orthanc import OrthancClient
from tl_med.tracking import Tracker
from tl_med.workspace import Workspace

pytestmark = pytest.mark.e2e
USER, PASSWORD = "tlmed", "QXPACSPASSWORD"

need = [name for name, found in (("Orthanc", orthanc_binary()), ("storescu", shutil.which("storescu"))) if not found]
if need and not os.environ.get("CI"):
    pytest.skip(f"{', '.join(need)} not installed (make test installs orthanc and dcmtk as root)",
                allow_module_level=True)


def _champion(ws: Workspace) -> None:
    spec = ModelSpec(task="liver", site="east", modality="CT", labels={"0": "background", "1": "liver"},
                     network=NetworkConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=0),
                     preprocess=PreprocessConfig(spacing=(8.0, 8.0, 8.0), patch_size=(16, 16, 16)),
                     inference=InferenceConfig(sw_batch_size=2))
    torch.manual_seed(0)
    tracker = Tracker(ws.tracking_uri, "tlmed-liver", artifact_root=ws.mlflow_artifacts)
    with tracker.run("east-finetune") as run_id:
        uri = tracker.log_package(run_id, build_network(spec.network), spec)
    tracker.register(uri, "tlmed-liver-east", run_id, tags={"decision": "approved"}, description="test",
                     alias="champion")


def _series(client: OrthancClient, study: str) -> list[dict]:
    return client._get(f"/studies/{study}/series", "listing series").json()


def test_new_studies_are_segmented_once_and_their_segs_stored_with_them(prefect_server, tmp_path, tiny_incoming,
                                                                        monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.settings import get_current_settings

    from flows.inference import site_inference

    ws = Workspace(tmp_path / "ws").ensure()
    _champion(ws)
    studies, uids = [], set()
    for name in ("study_0001", "study_0002"):
        shutil.copytree(tiny_incoming / "east" / "dicom" / name, tmp_path / "send" / name)
        uids |= plant_phi(tmp_path / "send" / name)
        studies.append(tmp_path / "send" / name)
    monkeypatch.setenv("TEST_PACS_USER", USER)
    monkeypatch.setenv("TEST_PACS_PASSWORD", PASSWORD)
    with local_orthanc(tmp_path / "orthanc", USER, PASSWORD) as pacs:
        sites_file = tmp_path / "sites.yaml"
        sites_file.write_text(yaml.safe_dump({"task": "liver", "sites": [
            {"name": "north", "role": "source", "dicom_dir": "incoming/north/dicom",
             "labels_dir": "incoming/north/labels"},
            {"name": "east", "role": "target", "dicom_dir": "incoming/east/dicom", "labels_dir": "incoming/east/labels",
             "pacs": {"url": pacs.url, "username_env": "TEST_PACS_USER", "password_env": "TEST_PACS_PASSWORD",
                      "query": {"modality": "CT", "tags": {"PatientID": PLANTED["PatientID"]}}}}]}))
        for study in studies:
            send(study, pacs.dicom_port)
        send(tiny_incoming / "north" / "dicom" / "study_0001", pacs.dicom_port)  # another site's: left alone
        client = OrthancClient(pacs.url, (USER, PASSWORD))
        deadline = time.monotonic() + 60
        while not all(client.is_stable(s) for s in client.find_studies({})) and time.monotonic() < deadline:
            time.sleep(0.5)

        state = site_inference(site="east", workspace=str(ws.root), sites_file=str(sites_file), return_state=True)
        assert state.is_completed(), state.message
        results = state.result()
        assert len(results) == 2 and all((r.series, r.segmented, r.stored) == (1, 1, 1) for r in results)
        assert all(r.model == "tlmed-liver-east v1" and r.study.startswith("s") for r in results)
        for study in client.find_studies({"PatientID": PLANTED["PatientID"]}):
            series = {s["MainDicomTags"]["Modality"]: s for s in _series(client, study)}
            assert set(series) == {"CT", "SEG"}
            seg_file = tmp_path / f"{study}.dcm"
            seg_file.write_bytes(client.instance_file(series["SEG"]["Instances"][0]))
            assert dciodvfy_errors(seg_file) == []
            seg = pydicom.dcmread(seg_file)
            assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series["CT"]["MainDicomTags"][
                "SeriesInstanceUID"] and seg.Manufacturer == "tl_med"
            # a prediction stored in the PACS is never pulled in as a training label
            report = IngestReport(site="east", key=b"k")
            assert scan_dicom_tree(tmp_path, report, rel_to=tmp_path, files=[seg_file]) == []
            assert report.reasons("skipped") == {
                "a segmentation predicted by tl_med (Manufacturer tl_med), not a reference label": 1}
        (north,) = client.find_studies({"PatientID": "FAKEPID-NORTH*"})
        assert {s["MainDicomTags"]["Modality"] for s in _series(client, north)} == {"CT"}

        # the next run finds nothing new: the ledger names the studies by keyed hashes
        again = site_inference(site="east", workspace=str(ws.root), sites_file=str(sites_file), trigger="schedule")
        assert again == []
        client.close()

    with get_client(sync_client=True) as prefect:
        (artifact,) = prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["inference-east"])))
    assert artifact.type == "table" and all(r.study in artifact.data for r in results)
    secrets = [v.encode() for v in PLANTED.values()] + [b"QXPRIVATEPHI", b"QXPRIVATE2"] + [u.encode() for u in uids]
    db_url = get_current_settings().server.database.connection_url.get_secret_value()
    prefect_files = [p for p in Path(db_url.split("///")[-1]).parent.glob("*") if p.is_file()]
    written = [p for p in ws.root.rglob("*") if p.is_file()] + prefect_files
    assert any(p.name == "east.json" and p.parent.name == "inference" for p in written)
    assert any(b"inference-east" in p.read_bytes() for p in prefect_files)  # positive control
    for path in written:
        blob = text_of(path)
        leaked = [s.decode() for s in secrets if s in blob or s.decode() in str(path)]
        assert not leaked, f"{leaked} leaked into {path}"
