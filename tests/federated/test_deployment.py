"""The same federated job on a provisioned NVFlare deployment (mirrors tl_med/federated/job.run_deployed
and tl_med/federated/provision.py): NVFlare's POC mode provisions a server, one client per site and an
admin with startup kits, and starts them as separate processes talking over the network, as
hospitals' machines would; tl_med submits its job there with the admin's kit (NVFlare's ProdEnv)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from tl_med.errors import InputError
from tl_med.federated import FederatedConfig, federated_model_name, federated_pretrain, nvflare_available
from tl_med.federated.provision import REQUIRED, allow_components
from tl_med.stages import StageContext
from tl_med.tracking import CHALLENGER, Tracker

needs_nvflare = pytest.mark.skipif(not nvflare_available(),
                                   reason="nvflare is not installed (pip install -e '.[federated]')")
SITES = ("north", "east")
ADMIN = "admin@nvidia.com"  # POC mode's project admin


def _context(ws, root):
    from tl_med.config import PipelineConfig

    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}", "tlmed-liver", artifact_root=root / "artifacts")
    return StageContext(ws=ws, cfg=PipelineConfig.profile("tiny"), tracker=tracker)


def test_allowing_components_keeps_the_sites_own_list(tmp_path):
    local = tmp_path / "server" / "local"
    local.mkdir(parents=True)
    (local / "resources.json.default").write_text(json.dumps({"class_allow_list": ["a.b.C"], "x": 1}))
    written = allow_components(tmp_path / "server")
    assert json.loads(written.read_text()) == {"class_allow_list": ["a.b.C", *REQUIRED], "x": 1}
    allow_components(tmp_path / "server")  # idempotent, and reads the resources.json it wrote
    assert json.loads(written.read_text())["class_allow_list"] == ["a.b.C", *REQUIRED]
    with pytest.raises(InputError, match="no local/resources.json"):
        allow_components(tmp_path / "elsewhere")


def test_a_folder_that_is_not_a_startup_kit_is_refused_before_any_run(ingested, tmp_path):
    ws, _ = ingested
    ctx = _context(ws, tmp_path)
    with pytest.raises(InputError, match="has no startup/ folder"):
        federated_pretrain(ctx, {s: ws.site_manifest(s) for s in SITES},
                           FederatedConfig(startup_kit=str(tmp_path)), folder=tmp_path / "job")
    assert ctx.tracker.client.search_runs([ctx.tracker.experiment_id]) == []


@pytest.mark.e2e
@needs_nvflare
def test_the_job_runs_on_a_provisioned_deployment(ingested, tmp_path):
    ws, _ = ingested
    poc = tmp_path / "poc"
    env = {**os.environ, "NVFLARE_POC_WORKSPACE": str(poc)}
    nvflare = [sys.executable, "-m", "nvflare.cli", "poc"]
    subprocess.run([*nvflare, "prepare", "-c", *SITES], env=env, check=True, capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=180)
    kit = poc / "example_project" / "prod_00"
    for participant in ("server", *SITES):  # what each site's admin does once
        allow_components(kit / participant)
    with open(tmp_path / "poc.log", "w") as log:
        services = subprocess.Popen([*nvflare, "start", "-ex", ADMIN], env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        ctx = _context(ws, tmp_path)
        fed = FederatedConfig(rounds=2, startup_kit=str(kit / ADMIN), admin=ADMIN, timeout_s=400)
        result = federated_pretrain(ctx, {s: ws.site_manifest(s) for s in SITES}, fed, folder=tmp_path / "job")
        client = ctx.tracker.client
        version = client.get_model_version_by_alias(federated_model_name("liver"), CHALLENGER)
        assert str(version.version) == result.model_version and version.run_id == result.run_id
        assert (tmp_path / "job" / "deployment").is_dir() and result.bytes_per_round > 0
        for site in SITES:  # the clients' per-round numbers came back through the real server
            losses = client.get_metric_history(result.site_runs[site], "train_loss")
            assert [m.step for m in losses] == [0, 1] and all(np.isfinite(m.value) for m in losses)
        assert set(result.site_dice) == set(SITES)
    finally:
        subprocess.run([*nvflare, "stop"], env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=180)
        try:
            os.killpg(services.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
