"""``tl-med federated`` (mirrors tl_med/cli/federated.py): the Prefect flow from the command line,
its JSON result, the model it registers, and one-line refusals of a user's mistakes."""

from __future__ import annotations

import json

import pytest

from tests.test_cli import tl_med
from tl_med.federated import nvflare_available
from tl_med.mlflow_store import mlflow_client
from tl_med.tracking import CHALLENGER


@pytest.mark.parametrize("args, message", [
    (["--site", "north"], "error: federated pretraining needs at least two sites (got north)"),
    (["--site", "north", "--site", "nowhere"], "error: unknown site 'nowhere' (known sites: north, east)"),
    (["--algorithm", "fedprox"], "error: algorithm fedprox needs mu > 0 (the proximal coefficient, e.g. 0.01)"),
    (["--algorithm", "fedsgd"], "error: --algorithm fedsgd: unknown (known: fedavg, fedprox)"),
    (["--startup-kit", "/"], "error: NVFlare startup kit / has no startup/ folder: give the admin's kit folder that "
                             "`nvflare provision` wrote (e.g. prod_00/admin@hospital.org)"),
])
def test_a_mistake_is_one_line_before_anything_runs(workspace, args, message):
    ws, sites_file = workspace
    proc = tl_med("federated", *args, "--workspace", str(ws.root), "--sites", str(sites_file), "--profile", "tiny")
    assert (proc.returncode, proc.stderr.strip().splitlines()) == (2, [message])
    assert not ws.mlflow_db.exists()


@pytest.mark.e2e
@pytest.mark.skipif(not nvflare_available(), reason="nvflare is not installed (pip install -e '.[federated]')")
def test_the_command_runs_the_flow_and_registers_the_global_model(workspace):
    ws, sites_file = workspace
    proc = tl_med("federated", "--workspace", str(ws.root), "--sites", str(sites_file), "--profile", "tiny",
                  "--rounds", "2", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "tl_med.federated/1" and doc["sites"] == ["north", "east"] and doc["rounds"] == 2
    assert set(doc["site_dice"]) == {"north", "east"} and all(0 <= d <= 1 for d in doc["site_dice"].values())
    client = mlflow_client(ws.tracking_uri)
    version = client.get_model_version_by_alias("tlmed-liver-federated", CHALLENGER)
    assert (doc["model_name"], doc["model_version"]) == ("tlmed-liver-federated", str(version.version))
    per_client = {k for k in client.get_run(doc["run_id"]).data.metrics if k.startswith("test_dice_")}
    assert per_client == {"test_dice_north", "test_dice_east"}
    for site, run_id in doc["site_runs"].items():  # each client's per-round metrics, in its own child run
        assert client.get_metric_history(run_id, "train_loss"), site
