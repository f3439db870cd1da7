"""``site-retrain`` without a server: a SIGKILLed run resumes from its checkpoint; a failed run
leaves no model version behind; bad input stops before any run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from conftest import tiny_start_weights
from tl_med.config import PipelineConfig

pytestmark = pytest.mark.e2e

TL_MED = [sys.executable, "-m", "tl_med.cli"]


def _cli_env(ws_root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return {**env, "TL_MED_HOME": str(ws_root), "PYTHONUNBUFFERED": "1"}


def _config(path: Path, epochs: int) -> Path:
    cfg = PipelineConfig.profile("tiny")
    cfg = PipelineConfig.model_validate({**cfg.model_dump(), "adapt": {**cfg.adapt.model_dump(), "epochs": epochs}})
    path.write_text(cfg.to_yaml())
    return path


def test_a_sigkilled_retrain_resumes_from_its_checkpoint_and_registers_once(workspace, tmp_path):
    ws, sites_file = workspace
    start = tiny_start_weights(tmp_path / "start.pt")
    cmd = [*TL_MED, "retrain", "--site", "east", "--pretrained", str(start), "--sites", str(sites_file),
           "--config", str(_config(tmp_path / "cfg.yaml", epochs=25)), "-w", str(ws.root)]
    # its own session: the kill takes the whole process group (flow and temporary Prefect server),
    # as when a machine or container dies
    first = subprocess.Popen(cmd, env=_cli_env(ws.root), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                             start_new_session=True)
    deadline = time.monotonic() + 300
    while not list((ws.root / "checkpoints").glob("*/adapted/train.pt")):
        assert first.poll() is None, "the first run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # a few more epochs in
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    client = MlflowClient(f"sqlite:///{ws.mlflow_db}")
    assert not client.search_model_versions("name = 'tlmed-liver-east'"), "killed before registering"

    second = subprocess.run(cmd, env=_cli_env(ws.root), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    out = second.stdout + second.stderr
    assert "resumed training from checkpoint after epoch" in out
    versions = client.search_model_versions("name = 'tlmed-liver-east'")
    assert [str(v.version) for v in versions] == ["1"]
    adapted = client.get_run(versions[0].run_id)
    curve = client.get_metric_history(adapted.info.run_id, "train_loss")
    assert sorted(m.step for m in curve) == list(range(25)), "the resumed run carries the whole learning curve"
    assert not any((ws.root / "checkpoints").iterdir()), "checkpoints are removed once the work is recorded"


def test_a_failed_retrain_leaves_no_model_version_and_hands_challenger_back(prefect_server, workspace, tmp_path,
                                                                           monkeypatch):
    import flows.retrain as retrain

    ws, sites_file = workspace
    start = str(tiny_start_weights(tmp_path / "start.pt"))
    run = dict(site="east", pretrained=start, profile="tiny", workspace=str(ws.root), sites_file=str(sites_file))
    assert retrain.site_retrain(**run, return_state=True).is_completed()
    client = MlflowClient(f"sqlite:///{ws.mlflow_db}")
    assert str(client.get_model_version_by_alias("tlmed-liver-east", "challenger").version) == "1"

    def broken_artifact(**kwargs):
        raise RuntimeError("artifact store down")  # fails after the model was registered

    monkeypatch.setattr(retrain, "create_markdown_artifact", broken_artifact)
    state = retrain.site_retrain(**run, return_state=True)
    assert state.is_failed()
    versions = client.search_model_versions("name = 'tlmed-liver-east'")
    assert [str(v.version) for v in versions] == ["1"], "version 2 of the failed run was removed"
    assert str(client.get_model_version_by_alias("tlmed-liver-east", "challenger").version) == "1"
    failed = client.search_runs([client.get_experiment_by_name("tlmed-liver").experiment_id],
                                "attributes.status = 'RUNNING'")
    assert not failed


@pytest.mark.parametrize("args, message", [
    (["--site", "south"], "unknown site 'south' (known sites: north, east)"),
    (["--site", "north"], "site 'north' is the source site"),
    (["--site", "east", "--strategy", "everything"], "adapt.strategy"),
    (["--site", "east", "--steps", "adabn"], "batch"),
])
def test_bad_retrain_requests_stop_before_any_run(workspace, args, message):
    ws, sites_file = workspace
    done = subprocess.run([*TL_MED, "retrain", *args, "--sites", str(sites_file), "--profile", "tiny",
                           "-w", str(ws.root)], env=_cli_env(ws.root), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr
    assert not (ws.root / "mlflow.db").exists() and not any(ws.prefect_home.iterdir())


def test_a_server_that_is_down_is_named_and_nothing_runs(workspace):
    ws, sites_file = workspace
    env = {**_cli_env(ws.root), "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    for cmd in (["retrain", "--site", "east"], ["serve"]):
        done = subprocess.run([*TL_MED, *cmd, "--sites", str(sites_file), "-w", str(ws.root)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2
        assert "error: Prefect server at http://127.0.0.1:9/api is not reachable" in done.stderr


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["sites"][1].update(schedule={"cron": "0 25 * * *"}), "field 'sites.1.schedule.cron'"),
    (lambda s: s["sites"][1].update(schedule={"cron": "0 2 * * *", "timezone": "Mars/Olympus"}),
     "unknown time zone 'Mars/Olympus'"),
    (lambda s: s["sites"][1].update(inbox="incoming/east/no-such-inbox"),
     "field 'sites.1.inbox' (site 'east'): folder"),
])
def test_serve_refuses_a_malformed_sites_yaml_naming_the_field(workspace, edit, message):
    ws, sites_file = workspace
    registry = yaml.safe_load(sites_file.read_text())
    edit(registry)
    sites_file.write_text(yaml.safe_dump(registry))
    # the registry is checked before the server: no live server is needed to see these errors
    env = {**_cli_env(ws.root), "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    done = subprocess.run([*TL_MED, "serve", "--sites", str(sites_file), "-w", str(ws.root)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr, done.stderr
