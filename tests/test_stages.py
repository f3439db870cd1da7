import os

import pytest
import torch

from tl_med.errors import InputError
from tl_med.manifests import load_manifest, write_manifest
from tl_med.models.pretrained import load_state
from tl_med.stages import StageContext, adapt_site, pretrain_source


def _all_runs(tracker):
    return tracker.client.search_runs([tracker.experiment_id])


def test_pretrain_and_adapt_log_runs_and_register_challengers(ingested, tiny_cfg, tracker):
    ws, _ = ingested
    ctx = StageContext(ws=ws, cfg=tiny_cfg, tracker=tracker, trigger="manual")
    src = pretrain_source(ctx, "north", ws.site_manifest("north"))
    res = adapt_site(ctx, "east", ws.site_manifest("east"), pretrained=src.weights_uri)
    client = tracker.client
    runs = {r.info.run_name: r for r in _all_runs(tracker)}
    assert set(runs) == {"pretrain-north", "adapt-east", "east-source_only", "east-scratch", "east-finetune"}
    assert all(r.info.status == "FINISHED" for r in runs.values())
    ft = runs["east-finetune"]
    assert ft.data.tags["mlflow.parentRunId"] == res.parent_run_id
    for key in ("site", "trigger", "code_version", "manifest_sha256", "config_hash", "pretrained_source"):
        assert ft.data.tags[key]
    for key in ("adapt.lr", "adapt.epochs", "seed", "manifest_sha256", "code_version", "strategy"):
        assert key in ft.data.params
    assert len(client.get_metric_history(ft.info.run_id, "train_loss")) == tiny_cfg.adapt.epochs
    assert {"test_dice", "test_hd95", "source_only_dice", "scratch_dice"} <= set(ft.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(ft.info.run_id)}
    assert {"config", "plots", "metrics", "weights", "transfer"} <= artifacts
    assert len(ft.inputs.dataset_inputs) == 3
    version = client.get_model_version_by_alias("tlmed-liver-east", "challenger")
    assert str(version.version) == res.model_version and version.run_id == res.adapted_run_id
    assert float(version.tags["source_only_dice"]) == pytest.approx(res.source_only_dice, abs=1e-4)
    assert client.get_model_version_by_alias("tlmed-liver-north", "challenger").run_id == src.run_id
    # the registered model's weights load back through the pipeline's own loader
    state = load_state("models:/tlmed-liver-east@challenger", tracker)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the fluent API's global state was restored


def test_site_without_labelled_studies_leaves_nothing_in_mlflow(ingested, tiny_cfg, tracker, tmp_path):
    ws, _ = ingested
    manifest = load_manifest(ws.site_manifest("east"))
    empty = write_manifest(manifest.model_copy(update={"training": (), "numTraining": 0}),
                           tmp_path / "manifests" / "east.json")
    ctx = StageContext(ws=ws, cfg=tiny_cfg, tracker=tracker)
    with pytest.raises(InputError, match="site 'east' has no labelled training studies"):
        adapt_site(ctx, "east", empty, pretrained="runs:/0/weights")
    with pytest.raises(InputError, match="pretrained source"):
        adapt_site(ctx, "east", ws.site_manifest("east"), pretrained=str(tmp_path / "missing.pt"))
    assert _all_runs(tracker) == []
    assert tracker.client.search_model_versions("name='tlmed-liver-east'") == []
