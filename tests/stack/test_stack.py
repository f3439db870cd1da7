"""``python -m tl_med.stack up|status|down``: PostgreSQL, MLflow (tlmed-auth), Prefect server and worker as
real processes; the champion rule and the audit log checked on the PostgreSQL-backed server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tl_med.stack.control import PIPELINE_ACCOUNT, SERVICES, down, status, up
from tl_med.stack.layout import StackLayout
from tl_med.stack.mlflow_server import ADMIN, create_user, grant_model_permission
from tl_med.stack.postgres import find_bin_dir

pytestmark = pytest.mark.skipif(find_bin_dir() is None, reason="PostgreSQL binaries (initdb, pg_ctl) not installed")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    workspace = tmp_path_factory.mktemp("stack-ws")
    layout = StackLayout.of_workspace(workspace)
    try:
        rows = up(workspace, approvers=["dr_chen"], timeout=180)
        yield workspace, layout, {r.name: r for r in rows}
    finally:
        down(workspace)
        data_dir = layout.read_state().get("pg_data_dir")
        if data_dir and not Path(data_dir).is_relative_to(workspace):  # the root fallback in /var/tmp
            shutil.rmtree(data_dir, ignore_errors=True)


def test_up_brings_every_part_up_healthy(stack):
    workspace, layout, rows = stack
    assert [r.name for r in rows.values()] == list(SERVICES)
    assert all(r.healthy and r.pid for r in rows.values()), rows
    assert not (layout.prefect_home / "prefect.db").exists()  # Prefect runs on PostgreSQL, not SQLite
    assert all(oct(p.stat().st_mode)[-3:] == "600" for p in layout.secrets_dir.iterdir())
    secrets = [p.read_text().strip() for p in layout.secrets_dir.iterdir() if p.name != "pgpass"]
    logs = "".join(p.read_text(errors="replace") for p in (layout.root / "logs").iterdir())
    assert not any(s in logs for s in secrets)
    assert "PREFECT_API_URL" in (layout.root / "client.env").read_text()
    again = up(workspace, approvers=["dr_chen"])  # idempotent: the same processes
    assert [(r.name, r.pid) for r in again] == [(r.name, r.pid) for r in rows.values()]


def test_champion_rule_on_the_postgres_backed_server(stack):
    _, layout, rows = stack
    url = rows["mlflow"].address
    admin = (ADMIN, layout.secret("mlflow-admin-password"))
    pipeline = (PIPELINE_ACCOUNT, layout.secret("mlflow-pipeline-password"))
    chen = ("dr_chen", "chen-Secret-1234")
    create_user(url, admin, *chen)
    api = url + "/api/2.0/mlflow"
    assert requests.post(f"{api}/registered-models/create", json={"name": "tlmed-liver-east"}, auth=pipeline,
                         timeout=30).status_code == 200
    exp = requests.post(f"{api}/experiments/create", json={"name": "e"}, auth=pipeline, timeout=30).json()
    run = requests.post(f"{api}/runs/create", json={"experiment_id": exp["experiment_id"]}, auth=pipeline,
                        timeout=30).json()["run"]["info"]["run_id"]
    version = requests.post(f"{api}/model-versions/create", auth=pipeline, timeout=30,
                            json={"name": "tlmed-liver-east", "source": f"runs:/{run}/model",
                                  "run_id": run}).json()["model_version"]["version"]
    grant_model_permission(url, admin, "tlmed-liver-east", "dr_chen", "EDIT")
    body = {"name": "tlmed-liver-east", "alias": "champion", "version": version}
    assert requests.post(f"{api}/registered-models/alias", json={**body, "alias": "challenger"}, auth=pipeline,
                         timeout=30).status_code == 200
    assert requests.post(f"{api}/registered-models/alias", json=body, auth=pipeline, timeout=30).status_code == 403
    assert requests.post(f"{api}/registered-models/alias", json=body, auth=chen, timeout=30).status_code == 200
    events = requests.get(f"{api}/tlmed/alias-audit", params={"name": "tlmed-liver-east"}, auth=chen,
                          timeout=30).json()["events"]
    assert [(e["username"], e["alias"], e["outcome"]) for e in events] == [
        ("pipeline", "challenger", "ok"), ("pipeline", "champion", "denied"), ("dr_chen", "champion", "ok")]


def test_a_retrain_triggered_through_the_stack_runs_on_its_worker(stack, tiny_incoming, tmp_path):
    """`tl-med retrain` against the stack's Prefect server: the site-retrain deployment (registered on
    the work pool by flows.deploy) runs on the stack's worker, which tracks and registers on the
    PostgreSQL-backed MLflow server as the pipeline account, artifacts in the server's store."""
    import os

    import yaml

    from tests.conftest import make_workspace, tiny_start_weights
    from tl_med.stack.prefect_services import POOL

    workspace, layout, rows = stack
    _, sites_file = make_workspace(workspace, tiny_incoming)  # the worker's TL_MED_HOME
    registry = yaml.safe_load(sites_file.read_text())
    registry["sites"][1]["retrain"] = {"pretrained": str(tiny_start_weights(tmp_path / "start.pt"))}
    sites_file.write_text(yaml.safe_dump(registry))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(PREFECT_API_URL=rows["prefect-server"].address, TL_MED_HOME=str(workspace))
    root = Path(__file__).resolve().parents[2]
    deploy = subprocess.run([sys.executable, "-m", "flows.deploy", "--work-pool", POOL, "--sites", str(sites_file),
                             "--workspace", str(workspace), "--profile", "tiny"], env=env, cwd=root,
                            capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0 and "site-retrain" in deploy.stdout, deploy.stdout + deploy.stderr
    retrain = subprocess.run([sys.executable, "-m", "tl_med.cli", "retrain", "--site", "east", "--sites",
                              str(sites_file), "--profile", "tiny", "--json"], env=env, cwd=root,
                             capture_output=True, text=True, timeout=600)
    worker_log = layout.log_file("prefect-worker").read_text(errors="replace")
    assert retrain.returncode == 0, retrain.stdout + retrain.stderr + worker_log[-3000:]
    assert json.loads(retrain.stdout)["prefect_flow_run"]["state"] == "COMPLETED"

    url, admin = rows["mlflow"].address, (ADMIN, layout.secret("mlflow-admin-password"))
    api = url + "/api/2.0/mlflow"
    version = requests.get(f"{api}/registered-models/alias", params={"name": "tlmed-liver-east", "alias": "challenger"},
                           auth=admin, timeout=30).json()["model_version"]
    run = requests.get(f"{api}/runs/get", params={"run_id": version["run_id"]}, auth=admin, timeout=30).json()["run"]
    assert run["info"]["user_id"] == PIPELINE_ACCOUNT  # the account the worker authenticates as
    assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:/"), run["info"]["artifact_uri"]
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}["trigger"] == "manual"
    secrets = [p.read_text().strip() for p in layout.secrets_dir.iterdir() if p.name != "pgpass"]
    assert not any(s in json.dumps(run) or s in worker_log for s in secrets)
    assert not (workspace / "mlflow.db").exists()  # nothing went to an embedded store


def test_cli_status_and_down(stack):
    workspace, _, _ = stack
    cli = [sys.executable, "-m", "tl_med.stack"]
    assert subprocess.run([*cli, "status", "-w", str(workspace)], capture_output=True, text=True).returncode == 0
    done = subprocess.run([*cli, "down", "-w", str(workspace)], capture_output=True, text=True)
    assert done.returncode == 0 and "mlflow" in done.stdout and "postgres" in done.stdout, done.stdout + done.stderr
    assert not any(r.healthy or r.pid for r in status(workspace))
