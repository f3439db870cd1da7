"""One real Prefect flow run of the whole pipeline on two tiny sites, checked through MLflow."""

from __future__ import annotations

import re

import pytest
from mlflow import MlflowClient

from tests.phi import PLANTED, plant_phi, text_of
from tl_med.config import PipelineConfig

pytestmark = pytest.mark.e2e


def test_pipeline_flow_runs_and_registers_challengers(prefect_server, workspace):
    from flows.pipeline import site_adaptation_pipeline

    ws, sites_file = workspace
    cfg = PipelineConfig.profile("tiny")
    outcome = site_adaptation_pipeline(workspace=str(ws.root), sites_file=str(sites_file),
                                       config=cfg.model_dump(mode="json"))
    assert [r.site for r in outcome.sites] == ["east"]
    client = MlflowClient(ws.tracking_uri)
    exp = client.get_experiment_by_name("tlmed-liver")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert {"pretrain-north", "adapt-east", "east-finetune", "east-scratch", "east-source_only"} <= set(runs)
    finetune = runs["east-finetune"]
    assert finetune.data.tags["prefect_flow_run_id"] and finetune.data.tags["trigger"] == "manual"
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:  # readable run names: flow, site(s), UTC time
        name = prefect.read_flow_run(finetune.data.tags["prefect_flow_run_id"]).name
    assert re.fullmatch(r"site-adaptation-pipeline-all-sites-\d{8}T\d{6}Z", name), name
    assert "test_dice" in finetune.data.metrics
    assert len(client.get_metric_history(finetune.info.run_id, "val_dice")) == cfg.adapt.epochs
    for site, run in (("north", runs["pretrain-north"]), ("east", finetune)):
        version = client.get_model_version_by_alias(f"tlmed-liver-{site}", "challenger")
        assert version.run_id == run.info.run_id

    # running again in the same workspace gives new runs and new versions, no errors
    again = site_adaptation_pipeline(workspace=str(ws.root), sites_file=str(sites_file),
                                     config=cfg.model_dump(mode="json"))
    assert again.sites[0].model_version == "2"
    assert again.sites[0].adapted_dice == pytest.approx(outcome.sites[0].adapted_dice, abs=1e-6)


def test_no_planted_phi_reaches_anything_the_pipeline_writes(prefect_server, workspace):
    """Names, IDs, dates, institution, device, descriptions, UIDs and private tags planted in every
    input file appear nowhere in the workspace (data, manifests, reports, cache, de-identified DICOM,
    MLflow store and artifacts) nor in Prefect's database (logs, artifacts, parameters)."""
    import yaml
    from prefect.settings import get_current_settings

    from flows.pipeline import site_adaptation_pipeline

    ws, sites_file = workspace
    registry = yaml.safe_load(sites_file.read_text())
    uids = set()
    for site in registry["sites"]:
        site["ingest"] = {"keep_dicom": True, "dates": "shift"}
        uids |= plant_phi(ws.root / site["dicom_dir"])
    sites_file.write_text(yaml.safe_dump(registry))
    state = site_adaptation_pipeline(workspace=str(ws.root), sites_file=str(sites_file),
                                     config=PipelineConfig.profile("tiny").model_dump(mode="json"),
                                     return_state=True)
    assert state.is_completed()
    secrets = [v.encode() for v in PLANTED.values()] + [b"QXPRIVATEPHI", b"QXPRIVATE2"] + \
              [u.encode() for u in uids]
    db_url = get_current_settings().server.database.connection_url.get_secret_value()
    prefect_files = [p for p in __import__("pathlib").Path(db_url.split("///")[-1]).parent.glob("*") if p.is_file()]
    results = [p for p in get_current_settings().results.local_storage_path.rglob("*") if p.is_file()]
    assert any(b"convert-series" in p.read_bytes() or b"StackOutcome" in text_of(p) for p in results)
    prefect_files += results  # cached task results (convert-series, preprocess-case)
    written = [p for p in ws.root.rglob("*") if p.is_file() and ws.incoming not in p.parents
               and p.name != "sites.yaml"] + prefect_files
    assert any(p.suffix == ".dcm" for p in written) and any(p.name == "mlflow.db" for p in written)
    assert any("prefect" in p.name or p.suffix == ".db" for p in prefect_files)
    # positive controls: the scan does see what the pipeline legitimately wrote
    assert any(b"GE MEDICAL SYSTEMS" in text_of(p) for p in written)
    assert any(b"ingest-east" in p.read_bytes() for p in prefect_files)  # the ingest artifact's key
    assert any(b"comparison-report" in p.read_bytes() for p in prefect_files)  # the comparison artifact
    for path in written:
        blob = text_of(path)
        for secret in secrets:
            assert secret not in blob and secret.decode() not in str(path), \
                f"{secret.decode()!r} leaked into {path}"

    import pydicom

    exported = pydicom.dcmread(next(ws.data.rglob("*.dcm")))
    assert exported.PatientIdentityRemoved == "YES" and "PS3.15" in exported.DeidentificationMethod
    assert exported.StudyDate and exported.StudyDate != PLANTED["StudyDate"]  # shifted, not removed


def test_pipeline_adapts_and_registers_a_nifti_datalist_site(prefect_server, workspace, ingested, tmp_path):
    """A target site defined only by a NIfTI datalist runs through adapt, evaluate and register."""
    import yaml

    from flows.pipeline import site_adaptation_pipeline
    from tests.ingest.test_nifti_site import nifti_site_from

    ws, sites_file = workspace
    src_ws, _ = ingested
    (tmp_path / "lakeside").mkdir()
    datalist = nifti_site_from(src_ws, "east", tmp_path / "lakeside")
    registry = yaml.safe_load(sites_file.read_text())
    registry["sites"] = [registry["sites"][0], {"name": "lakeside", "datalist": str(datalist), "modality": "CT",
                                                "split": {"n_train": 2, "n_val": 1}}]
    sites_file.write_text(yaml.safe_dump(registry))
    (ws.root / registry["sites"][0]["dicom_dir"] / "notes.txt").write_text("not DICOM")  # one bad input
    state = site_adaptation_pipeline(workspace=str(ws.root), sites_file=str(sites_file),
                                     config=PipelineConfig.profile("tiny").model_dump(mode="json"),
                                     return_state=True)
    assert state.is_completed() and state.message == "completed with 1 quarantined"
    outcome = state.result()
    assert [r.site for r in outcome.sites] == ["lakeside"]
    client = MlflowClient(ws.tracking_uri)
    version = client.get_model_version_by_alias("tlmed-liver-lakeside", "challenger")
    run = client.get_run(version.run_id)
    assert run.info.run_name == "lakeside-finetune" and "test_dice" in run.data.metrics
    assert run.data.metrics["ingest_quarantined"] == 0 and run.data.metrics["ingest_converted"] == 10
