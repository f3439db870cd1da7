"""The classification stage on the tiny ingested sites: four rows, logged runs, clear refusals."""

import json

import pytest

from tl_med.errors import InputError
from tl_med.manifests import load_manifest, write_manifest
from tl_med.stages.classification import MODELS, classify_site
from tl_med.stages.common import StageContext


def test_a_classification_run_reports_every_model_with_its_interval_and_logs_it(ingested, tiny_cfg, tracker):
    ws, _ = ingested
    ctx = StageContext(ws=ws, cfg=tiny_cfg, tracker=tracker)
    result = classify_site(ctx, "east", ws.site_manifest("east"), "north", ws.site_manifest("north"))
    assert result.classes == ("normal", "enlarged") and result.network == "ResNet10" and result.strategy == "finetune"
    assert result.n_labelled == len(load_manifest(ws.site_manifest("east")).training) and result.n_test == 2
    for model in MODELS:
        m = result.metrics[model]
        assert m is not None and m["n_cases"] == 2, model
        assert m["auc"] is None or 0 <= m["auc_low"] <= m["auc"] <= m["auc_high"] <= 1
        assert 0 <= m["ece"] <= 1 and set(result.shortcut[model]) >= {"flagged", "reason", "metadata_auc"}
    runs = {r.info.run_name: r for r in tracker.client.search_runs([tracker.experiment_id])}
    assert set(runs) == {"classify-east", "classify-source-north", "classify-adabn", "classify-scratch",
                         "classify-finetune"}
    adapted = runs["classify-finetune"]
    assert adapted.data.tags["mlflow.parentRunId"] == result.parent_run_id
    assert adapted.data.tags["task_kind"] == "classification"
    assert {"test_balanced_accuracy", "test_ece", "test_shortcut_flagged", "train_loss"} <= set(adapted.data.metrics)
    assert adapted.data.params["classifier.network"] == "ResNet10"
    cases = json.loads(open(tracker.client.download_artifacts(adapted.info.run_id, "metrics/test_classes.json")).read())
    assert len(cases["cases"]) == 2 and set(cases["cases"][0]["probabilities"]) == {"normal", "enlarged"}
    source = runs["classify-source-north"]
    assert "source_test_ece" in source.data.metrics  # its own site's test split, beside the target's
    assert tracker.client.list_artifacts(source.info.run_id, "weights")  # reusable as a pretrained start


def test_sites_without_classes_or_with_other_classes_are_refused_before_any_run(ingested, tiny_cfg, tracker, tmp_path):
    ws, _ = ingested
    ctx = StageContext(ws=ws, cfg=tiny_cfg, tracker=tracker)
    bare = write_manifest(load_manifest(ws.site_manifest("north")).model_copy(update={"classes": ()}),
                          tmp_path / "north.json")
    with pytest.raises(InputError, match="site 'north' has no case-level classes"):
        classify_site(ctx, "east", ws.site_manifest("east"), "north", bare)
    other = write_manifest(load_manifest(ws.site_manifest("east")).model_copy(update={"classes": ("a", "b")}),
                           tmp_path / "east.json")
    with pytest.raises(InputError, match=r"site 'east' has classes \['a', 'b'\]"):
        classify_site(ctx, "east", other, "north", ws.site_manifest("north"))
    multitask = tiny_cfg.model_copy(update={"adapt": tiny_cfg.adapt.model_copy(update={"strategy": "multitask"})})
    with pytest.raises(InputError, match="multitask is a segmentation strategy"):
        classify_site(StageContext(ws=ws, cfg=multitask, tracker=tracker), "east", ws.site_manifest("east"), "north",
                      ws.site_manifest("north"))
    assert not tracker.client.search_runs([tracker.experiment_id])
