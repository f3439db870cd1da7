"""``tl-med serve`` against a real ``prefect server start`` on loopback: the deployment with its
per-site schedule, a manual retrain through the API, and an inbox delivery that triggers exactly
one retraining run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from mlflow import MlflowClient

from conftest import tiny_start_weights
from tl_med.pacs.local import free_port, local_orthanc, orthanc_binary, send

pytestmark = pytest.mark.e2e


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.5)
    tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def _env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return {**env, "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1", **more}


@pytest.fixture
def prefect_api(tmp_path):
    """``prefect server start`` (SQLite, its own PREFECT_HOME) on a free loopback port."""
    port, home, log = free_port(), tmp_path / "prefect-server", tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                 "--port", str(port)], env=_env(PREFECT_HOME=str(home), PREFECT_UI_ENABLED="false"),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"

    def healthy():
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        _wait(healthy, 120, "the Prefect server", proc, log)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _runs(url: str, *tags: str) -> list[dict]:
    body = {"flows": {"name": {"any_": ["site-retrain"]}}, "flow_runs": {"tags": {"all_": list(tags)}}} if tags \
        else {"flows": {"name": {"any_": ["site-retrain"]}}}
    return httpx.post(f"{url}/flow_runs/filter", json=body, timeout=10).json()


def test_serve_runs_manual_and_new_data_retrains_through_the_server(prefect_api, workspace, tmp_path):
    from tl_med.data.synthetic import PROFILES, generate_study

    url, (ws, sites_file) = prefect_api, workspace
    registry = yaml.safe_load(sites_file.read_text())
    registry["sites"][1]["retrain"] = {"pretrained": str(tiny_start_weights(tmp_path / "start.pt"))}
    sites_file.write_text(yaml.safe_dump(registry))
    env = _env(PREFECT_API_URL=url, TL_MED_HOME=str(ws.root), PREFECT_RUNNER_POLL_FREQUENCY="2")
    serve, serve_log = _serve(env, sites_file, tmp_path)
    try:
        deployment = _wait(lambda: (r := httpx.get(f"{url}/deployments/name/site-retrain/site-retrain",
                                                   timeout=5)).status_code == 200 and r.json(),
                           120, "the site-retrain deployment", serve, serve_log)
        (schedule,) = deployment["schedules"]
        assert schedule["schedule"]["cron"] == "0 3 * * *" and schedule["schedule"]["timezone"] == "UTC"
        assert schedule["parameters"] == {"site": "east", "trigger": "schedule"}
        assert {"site", "pretrained", "strategy", "steps", "n_labelled", "trigger"} <= \
            set(deployment["parameter_openapi_schema"]["properties"])
        inference = _wait(lambda: (r := httpx.get(f"{url}/deployments/name/site-inference/site-inference",
                                                  timeout=5)).status_code == 200 and r.json(),
                          60, "the site-inference deployment", serve, serve_log)  # serve registers them one by one
        assert inference["schedules"] == [] and inference["parameters"]["workspace"] == str(ws.root)  # no PACS here
        federated = _wait(lambda: (r := httpx.get(f"{url}/deployments/name/federated-pretrain/federated-pretrain",
                                                  timeout=5)).status_code == 200 and r.json(),
                          60, "the federated-pretrain deployment", serve, serve_log)
        assert federated["schedules"] == [] and federated["parameters"]["sites_file"] == str(sites_file.resolve())
        assert {"participants", "rounds", "algorithm", "mu"} <= set(federated["parameter_openapi_schema"]["properties"])

        # a manual retrain through the API (the CLI calls run_deployment and waits)
        manual = subprocess.run([sys.executable, "-m", "tl_med.cli", "retrain", "--site", "east",
                                 "--sites", str(sites_file)], env=env, capture_output=True, text=True, timeout=400)
        assert manual.returncode == 0, manual.stdout + manual.stderr + serve_log.read_text()[-3000:]
        assert "Completed" in manual.stdout
        (run,) = _runs(url, "trigger:manual")
        assert run["state"]["type"] == "COMPLETED" and "site:east" in run["tags"]
        client = MlflowClient(f"sqlite:///{ws.mlflow_db}")
        parents = client.search_runs([client.get_experiment_by_name("tlmed-liver").experiment_id],
                                     "tags.strategy = 'parent'")
        assert [(p.data.tags["trigger"], p.data.tags["prefect_flow_run_id"]) for p in parents] == \
            [("manual", run["id"])]
        n_unlabelled = len(yaml.safe_load(ws.site_manifest("east").read_text())["unlabelled"])

        # a burst of files (one new study, copied slice by slice) -> one delivery -> one retrain
        study, _ = generate_study("east", PROFILES["east"].downsampled(4), 99, 7, tmp_path / "new")
        inbox = ws.incoming / "east" / "inbox"
        for i, path in enumerate(sorted(study.iterdir())):
            shutil.copy(path, inbox / f"slice{i:03d}.dcm")
            time.sleep(0.3)
        new = _wait(lambda: [r for r in _runs(url, "trigger:new-data") if r["state"]["type"] in
                             ("COMPLETED", "FAILED", "CRASHED")], 400, "the new-data run", serve, serve_log)
        assert new[0]["state"]["type"] == "COMPLETED", serve_log.read_text()[-4000:]
        time.sleep(8)  # longer than the quiet period: no second run follows
        assert len(_runs(url, "trigger:new-data")) == 1 and len(_runs(url)) == 2
        assert not any(inbox.iterdir())
        assert len(list((ws.incoming / "east" / "dicom").glob("delivery-*/*.dcm"))) == len(list(study.iterdir()))
        manifest = yaml.safe_load(ws.site_manifest("east").read_text())
        assert len(manifest["unlabelled"]) == n_unlabelled + 1, "only the new study was added"
        triggers = sorted(p.data.tags["trigger"] for p in client.search_runs(
            [client.get_experiment_by_name("tlmed-liver").experiment_id], "tags.strategy = 'parent'"))
        assert triggers == ["manual", "new-data"]
        assert "new-data event for delivery" in serve_log.read_text()
        artifacts = httpx.post(f"{url}/artifacts/filter", json={"artifacts": {"key": {"any_": ["retrain-east"]}}},
                               timeout=10).json()
        assert len(artifacts) == 2 and all("| east |" in a["data"] for a in artifacts), "a result table per run"
    finally:
        _stop(serve)


def _serve(env: dict[str, str], sites_file: Path, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    serve_log = tmp_path / "serve.log"
    with open(serve_log, "w") as out:
        serve = subprocess.Popen([sys.executable, "-m", "tl_med.cli", "serve", "--sites", str(sites_file),
                                  "--profile", "tiny", "--quiet-seconds", "3", "--poll-seconds", "0.5"],
                                 env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return serve, serve_log


def _stop(serve: subprocess.Popen) -> None:
    os.killpg(serve.pid, signal.SIGINT)
    try:
        serve.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(serve.pid, signal.SIGKILL)


@pytest.mark.skipif(not (orthanc_binary() and shutil.which("storescu")) and not os.environ.get("CI"),
                    reason="orthanc/dcmtk not installed (make test installs them as root)")
def test_a_study_sent_to_the_pacs_starts_exactly_one_retraining_run(prefect_api, workspace, tmp_path,
                                                                     tiny_incoming):
    """A modality sends one new study to Orthanc: the change-feed watcher in `tl-med serve` announces
    it once stable, the deployment trigger starts one retrain, whose ingest pulls just that study."""
    from tl_med.data.synthetic import PROFILES, generate_study

    url, (ws, sites_file) = prefect_api, workspace
    with local_orthanc(tmp_path / "orthanc", "tlmed", "QXPACSPASSWORD") as pacs:
        registry = yaml.safe_load(sites_file.read_text())
        registry["sites"][1]["retrain"] = {"pretrained": str(tiny_start_weights(tmp_path / "start.pt"))}
        registry["sites"][1]["pacs"] = {"url": pacs.url, "username_env": "PACS_USER", "password_env": "PACS_PASSWORD",
                                        "query": {"tags": {"PatientID": "FAKEPID-EAST-*"}}}
        sites_file.write_text(yaml.safe_dump(registry))
        env = _env(PREFECT_API_URL=url, TL_MED_HOME=str(ws.root), PREFECT_RUNNER_POLL_FREQUENCY="2",
                   PACS_USER="tlmed", PACS_PASSWORD="QXPACSPASSWORD")
        serve, serve_log = _serve(env, sites_file, tmp_path)
        try:
            cursor = ws.root / "pacs" / "east-cursor.json"
            _wait(cursor.is_file, 120, "the PACS watcher's first poll", serve, serve_log)
            study, _ = generate_study("east", PROFILES["east"].downsampled(4), 98, 7, tmp_path / "new")
            send(study, pacs.dicom_port)
            runs = _wait(lambda: [r for r in _runs(url, "trigger:new-data") if r["state"]["type"] in
                                  ("COMPLETED", "FAILED", "CRASHED")], 400, "the new-data run", serve, serve_log)
            assert runs[0]["state"]["type"] == "COMPLETED", serve_log.read_text()[-4000:]
            time.sleep(5)
            assert len(_runs(url)) == 1, "one study, one run"
            manifest = yaml.safe_load(ws.site_manifest("east").read_text())
            assert len(manifest["unlabelled"]) == 1, "the pulled study joined the site as an unlabelled case"
            assert len(list((ws.incoming / "east" / "dicom" / "pacs").glob("*/*.dcm"))) == 10
        finally:
            _stop(serve)
