"""One real Prefect flow run of the whole pipeline on two tiny sites, checked through MLflow."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from tl_med.config import PipelineConfig

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A session-local Prefect API (``prefect_test_harness``) with its own PREFECT_HOME."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect-home")))
    mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    mp.setenv("DO_NOT_TRACK", "1")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield
    mp.undo()


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
