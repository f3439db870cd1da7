"""The tl-med command as a user runs it: a subprocess, its exit status and its output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.validators import dciodvfy_errors


def tl_med(*args: str, cwd=None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}, **(env or {})}
    return subprocess.run([sys.executable, "-m", "tl_med.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


@pytest.mark.parametrize("args, message", [
    (["run", "--site", "nowhere"], "error: unknown site 'nowhere' (known sites: north, east)"),
    (["run", "--site", "north"], "error: site 'north' is the source site; pick a target site (east)"),
])
def test_bad_site_is_one_line_and_exit_2(workspace, args, message):
    ws, sites_file = workspace
    proc = tl_med(*args, "--workspace", str(ws.root), "--sites", str(sites_file))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [message]
    assert not ws.mlflow_db.exists()


def test_missing_data_folder_is_one_line_and_exit_2(tmp_path):
    proc = tl_med("run", "--workspace", str(tmp_path / "empty"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "site 'north': DICOM folder" in lines[0] and "missing or empty" in lines[0]


@pytest.mark.e2e
def test_site_without_labels_fails_before_anything_reaches_mlflow(workspace):
    import shutil

    ws, sites_file = workspace
    shutil.rmtree(ws.incoming / "east" / "labels")
    proc = tl_med("run", "--workspace", str(ws.root), "--sites", str(sites_file), "--profile", "tiny")
    assert proc.returncode == 2
    # Prefect's own log lines surround it (its temporary server logs its shutdown at exit)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: site 'east' has no labelled training studies")
    assert not ws.mlflow_db.exists()


def test_adapt_with_steps_that_need_batch_norm_is_one_line_and_exit_2(workspace):
    ws, sites_file = workspace
    proc = tl_med("adapt", "--site", "east", "--steps", "adabn", "--workspace", str(ws.root), "--sites", str(sites_file))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: adapt: Value error, adapt.steps ['adabn'] need batch normalisation: set network.norm: batch"]
    proc = tl_med("adapt", "--site", "east", "--steps", "magic", "--workspace", str(ws.root), "--sites", str(sites_file))
    assert proc.returncode == 2 and "steps.0: Input should be 'harmonise', 'inpainting', 'coral'" in proc.stderr


def test_ingest_command_reports_reconciled_counts(workspace):
    ws, sites_file = workspace
    proc = tl_med("ingest", "--site", "east", "--workspace", str(ws.root), "--sites", str(sites_file))
    assert proc.returncode == 0, proc.stderr
    assert "east: 60 inputs = 60 converted + 0 skipped + 0 quarantined; 5 labelled cases" in proc.stdout  # + 5 class rows


@pytest.mark.e2e
def test_demo_tiny_profile_end_to_end(tmp_path):
    """The main job, as a newcomer runs it (tiny profile): real Prefect temporary server and MLflow,
    output redirected to files as cron or CI would. The tiny profile with the default's second
    source (``pretrain.alternate``), so each site adapts from both sources."""
    import yaml

    from tl_med.config import PipelineConfig

    tiny = PipelineConfig.profile("tiny").model_dump(mode="json")
    tiny["pretrain"]["alternate"] = "intensity"
    config = tmp_path / "tiny-two-sources.yaml"
    config.write_text(yaml.safe_dump(tiny))
    proc = tl_med("demo", "--profile", "tiny", "--config", str(config), "--workspace", str(tmp_path / "ws"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Per-site adaptation" in proc.stdout and "east" in proc.stdout
    assert "; alternate source v2: test Dice" in proc.stdout
    assert re.search(r"east: kept the adaptation from the (intensity|contrast) source \(validation Dice", proc.stderr)
    assert "tl-med ui --workspace" in proc.stdout and "prefect server start" in proc.stdout
    assert not (tmp_path / "mlflow.db").exists()  # nothing written outside the workspace
    row = next(line for line in proc.stdout.splitlines() if "tlmed-liver-east v1" in line)
    assert len(re.findall(r"\b[01]\.\d{3}\b", row)) >= 4 and "…" not in proc.stdout  # numbers whole in a file
    # quiet: progress lines and no third-party warnings, no Prefect task chatter
    assert "train east-finetune: 2/2 epochs" in proc.stderr and "ingest east: read headers" in proc.stderr
    assert sum("warning" in line.lower() for line in (proc.stdout + proc.stderr).splitlines()) == 0, proc.stderr
    assert "Task run" not in proc.stderr

    # then adapt one site from the registered source model with another strategy and steps, for a script
    tiny_sites = str(Path(__file__).resolve().parent.parent / "data_manifests" / "sites-tiny.yaml")
    common = ("--workspace", str(tmp_path / "ws"), "--sites", tiny_sites)
    proc = tl_med("adapt", "--site", "east", "--strategy", "feature_extraction", "--steps", "harmonise,self_training",
                  "--labels", "1", "--config", str(config), "--json", *common, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "tl_med.result/1" and doc["pretrained"] == "models:/tlmed-liver-north@challenger"
    site = doc["sites"][0]
    assert site["adapted_from"] in ("models:/tlmed-liver-north@challenger", "models:/tlmed-liver-north@alternate")
    assert "east: kept the adaptation from the " in proc.stderr  # from the registered alternate too
    assert site["strategy"] == "feature_extraction+harmonise+self_training" and site["labels_used"] == 1
    assert (site["model"]["name"], site["model"]["version"]) == ("tlmed-liver-east", "2")
    takes = site["model"]["challenger"]  # v2 (1 label) takes challenger unless it scores below v1 on the same split
    assert site["model"]["challenger_reason"] and isinstance(takes, bool)
    assert set(site["dice"]) == {"source_only", "from_scratch", "adapted"} and 0 <= site["dice"]["adapted"] <= 1
    assert site["prefect_flow_run_id"] == doc["prefect_flow_run"]["id"] != ""

    # every candidate of the site, each with its baselines; the registry as JSON
    proc = tl_med("report", "--json", *common, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    candidates = json.loads(proc.stdout)["sites"][0]["candidates"]
    assert [(c["model"]["version"], c["labels"]) for c in candidates] == [("2", 1), ("1", 2)]
    assert all(c["dice"]["adapted"] is not None and c["dice"]["source_only"] is not None for c in candidates)
    proc = tl_med("models", "--json", "--site", "east", *common, cwd=tmp_path)
    versions = json.loads(proc.stdout)["versions"]
    assert [(v["version"], v["aliases"]) for v in versions] == ([("2", ["challenger"]), ("1", [])] if takes
                                                                 else [("2", []), ("1", ["challenger"])])

    # approve v1, then apply the champion to the site's held-out DICOM series, as acquired
    dice_v1 = next(c["dice"]["adapted"] for c in candidates if c["model"]["version"] == "1")
    proc = tl_med("approve", "--site", "east", "--version", "1", "--approver", "Dr. Test", "--reason", "e2e",
                  "--override", "tiny profile", *common, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    series = _held_out_series(tmp_path / "ws", "east")
    proc = tl_med("predict", "--site", "east", *map(str, series), "--out", str(tmp_path / "pred"), "--json",
                  "--workspace", str(tmp_path / "ws"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["model"] == "tlmed-liver-east v1" and len(doc["outputs"]) == len(series) >= 2
    dice = [_dice_against_truth(tmp_path / "ws", "east", s, Path(o["nifti"])) for s, o in zip(series, doc["outputs"])]
    assert abs(float(np.mean(dice)) - dice_v1) < 0.05, (dice, dice_v1)  # what users get is what we reported
    assert all(dciodvfy_errors(Path(o["seg"])) == [] for o in doc["outputs"])
    # and as a MONAI bundle that MONAI's own verifier accepts
    proc = tl_med("export", "--site", "east", "--out", str(tmp_path / "bundle"), "--workspace", str(tmp_path / "ws"),
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tmp_path / "bundle" / "configs" / "metadata.json").read_text())
    assert meta["name"] == "tlmed-liver-east" and meta["eval_metrics"]["mean_dice"] == pytest.approx(dice_v1, abs=1e-4)
    proc = tl_med("export", "--site", "east", "--model", "models:/tlmed-liver-east/2", "--out",
                  str(tmp_path / "b2"), "--workspace", str(tmp_path / "ws"), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: tlmed-liver-east v2 was not approved (decision: none): approve it with tl-med approve before "
        "exporting it"]


def _held_out_series(ws_root: Path, site: str) -> list[Path]:
    """The raw DICOM folders of the site's test split (found through the workspace's de-id key)."""
    import pydicom

    from tl_med.ingest.deid import case_id
    from tl_med.workspace import Workspace

    key = Workspace(ws_root).deid_key()
    test = {c["case_id"] for c in json.loads((ws_root / "manifests" / f"{site}.json").read_text())["test"]}
    out = []
    for folder in sorted(p for p in (ws_root / "incoming" / site / "dicom").iterdir() if p.is_dir()):
        first = next(p for p in folder.rglob("*") if p.is_file())
        if case_id(key, pydicom.dcmread(first, stop_before_pixels=True).SeriesInstanceUID) in test:
            out.append(folder)
    assert len(out) == len(test)
    return out


def _dice_against_truth(ws_root: Path, site: str, series: Path, mask_file: Path) -> float:
    import nibabel as nib
    import pydicom

    uid = pydicom.dcmread(next(p for p in series.rglob("*") if p.is_file()), stop_before_pixels=True).SeriesInstanceUID
    truth = nib.load(ws_root / "incoming" / site / "labels" / f"{uid}.nii.gz")
    mask = nib.load(mask_file)
    assert mask.shape == truth.shape and np.allclose(mask.affine, truth.affine, atol=1e-3)
    a, b = np.asanyarray(mask.dataobj) > 0, np.asanyarray(truth.dataobj) > 0
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def test_unknown_option_prints_usage_and_exits_2(tmp_path):
    proc = tl_med("approve", "--site", "hb", "--by", "x", cwd=tmp_path)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2 and len(lines) <= 5, lines
    assert lines[0].startswith("Usage: ") and "No such option: --by" in lines[-1]
    proc = tl_med("demoo", cwd=tmp_path)
    assert proc.returncode == 2 and "Did you mean 'demo'?" in proc.stderr and "Traceback" not in proc.stderr


def test_version():
    proc = tl_med("--version")
    assert proc.returncode == 0 and re.fullmatch(r"tl-med \d+\.\d+\.\d+\S*", proc.stdout.strip())


@pytest.mark.e2e
def test_prefect_that_cannot_start_is_one_line_naming_the_setting(workspace):
    ws, sites_file = workspace
    env_budget = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "1"}
    proc = tl_med("run", "--workspace", str(ws.root), "--sites", str(sites_file), "--profile", "tiny", env=env_budget)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: Prefect's temporary server did not answer within its start-up budget (Timed out while attempting "
        "to connect to ephemeral Prefect API server); raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS "
        "(now 1), or run a server (prefect server start) and set PREFECT_API_URL"]
    assert not ws.mlflow_db.exists()


def test_approve_refusal_and_success_from_the_command_line(workspace):
    from mlflow import MlflowClient

    ws, sites_file = workspace
    client = MlflowClient(ws.tracking_uri)
    run = client.create_run(client.create_experiment("t", artifact_location=str(ws.mlflow_artifacts))).info.run_id
    client.create_registered_model("tlmed-liver-east")
    for dice, flag in (("0.80", "false"), ("0.90", "true")):
        client.create_model_version("tlmed-liver-east", f"runs:/{run}/model", run_id=run,
                                    tags={"test_dice": dice, "source_only_dice": "0.1", "negative_transfer": flag,
                                          "manifest_sha256": "m", "estimated_dice": "0.7234"})
    common = ("--site", "east", "--workspace", str(ws.root), "--sites", str(sites_file))
    proc = tl_med("approve", "--version", "2", "--approver", "Dr. A", "--reason", "r", *common)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: refusing to approve tlmed-liver-east v2: it was flagged for negative transfer "
        "(use --override with a reason to approve anyway)"]
    proc = tl_med("approve", "--version", "1", "--reason", "r", *common)
    assert proc.returncode == 2 and "approver name is required" in proc.stderr
    proc = tl_med("approve", "--version", "1", "--approver", "Dr. A", "--reason", "reviewed", *common)
    assert proc.returncode == 0 and "tlmed-liver-east v1 is now champion (was none)" in proc.stdout
    assert "(test Dice 0.800, estimated 0.723 without labels)" in proc.stdout  # what the approver saw
    proc = tl_med("models", *common)
    assert proc.returncode == 0 and "champion" in proc.stdout and "Dr. A" in proc.stdout and "0.7234" in proc.stdout


@pytest.mark.e2e
def test_another_network_runs_end_to_end_and_a_mismatched_start_is_refused_in_one_line(workspace):
    from mlflow import MlflowClient

    ws, sites_file = workspace
    common = ("--workspace", str(ws.root), "--sites", str(sites_file), "--profile", "tiny")
    proc = tl_med("run", "--network", "DynUNet", "--json", *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    site = json.loads(proc.stdout)["sites"][0]
    assert site["site"] == "east" and 0 <= site["dice"]["adapted"] <= 1
    assert "east: transferred 100% of the parameters" in proc.stderr  # the transfer report, printed
    client = MlflowClient(ws.tracking_uri)
    version = client.get_model_version_by_alias("tlmed-liver-east", "challenger")
    run = client.get_run(version.run_id)
    assert run.data.params["network.name"] == "DynUNet" and run.data.metrics["transfer_share"] == 1.0
    report = json.loads(open(client.download_artifacts(run.info.run_id, "transfer/weights_report.json")).read())
    assert report["share"] == 1.0 and not report["missing_keys"] and not report["unexpected_keys"]
    # a SegResNet cannot start from the DynUNet source: one line, nothing new in MLflow
    n_runs = len(client.search_runs([run.info.experiment_id]))
    proc = tl_med("adapt", "--site", "east", "--network", "SegResNet", *common)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert "does not fit the network: transferred 0% of the parameters" in errors[0]
    assert len(client.search_runs([run.info.experiment_id])) == n_runs
    proc = tl_med("run", "--network", "bundle", *common)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: --network bundle: network bundle needs network.bundle, the bundle's folder: set both in a --config "
        "file"]
