import os
import re

import pytest
import torch

from tl_med.errors import InputError
from tl_med.manifests import load_manifest, write_manifest
from tl_med.models.pretrained import load_state
from tl_med.models.zoo import build_network
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
    assert {"config", "plots", "metrics", "weights", "transfer", "summary.md"} <= artifacts
    assert {a.path for a in client.list_artifacts(ft.info.run_id, "plots")} == \
        {"plots/learning_curve.png", "plots/overlays.png"}
    summary = open(client.download_artifacts(ft.info.run_id, "summary.md")).read()
    assert "| source-only |" in summary and "negative transfer" in summary
    from tl_med.report import comparison, to_html, to_markdown

    report = comparison(client, "liver", ["east", "west"], "tlmed-test")  # west has no runs: left out
    assert [r.site for r in report] == ["east"] and report[0].parent_run_id == res.parent_run_id
    (candidate,) = report[0].candidates
    assert set(candidate.runs) == {"source_only", "scratch", "finetune"} and candidate.version == res.model_version
    assert (candidate.source_only_dice, candidate.scratch_dice, candidate.adapted_dice) == pytest.approx(
        (res.source_only_dice, res.scratch_dice, res.adapted_dice), abs=1e-6)
    assert candidate.labels == res.n_labelled and candidate.aliases == ("challenger",)
    assert report[0].champion == "none" and report[0].challenger.startswith(f"v{res.model_version}:")
    assert f"| v{res.model_version} | challenger |" in to_markdown(report)
    assert f"<td class=n>{res.adapted_dice:.3f}</td>" in to_html(report)
    assert len(ft.inputs.dataset_inputs) == 3
    version = client.get_model_version_by_alias("tlmed-liver-east", "challenger")
    assert str(version.version) == res.model_version and version.run_id == res.adapted_run_id
    assert float(version.tags["source_only_dice"]) == pytest.approx(res.source_only_dice, abs=1e-4)
    assert res.challenger and version.tags["challenger_reason"] == res.challenger_reason == \
        "first version: no current challenger"
    assert client.get_run(res.parent_run_id).data.tags["challenger"] == "true"
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
    other = {f"encoder.{k}": v for k, v in build_network(tiny_cfg.network).state_dict().items()}  # another net
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(InputError, match=r"does not fit the network: transferred 0% of the parameters .* "
                                         r"unexpected \(e.g. encoder.model"):
        adapt_site(ctx, "east", ws.site_manifest("east"), pretrained=str(tmp_path / "other.pt"))
    assert _all_runs(tracker) == []
    assert tracker.client.search_model_versions("name='tlmed-liver-east'") == []


def _composed_cfg(**adapt):
    from tl_med.config import PipelineConfig

    base = PipelineConfig.profile("tiny").model_dump()
    base["network"]["norm"] = "batch"
    base["adapt"].update(adapt)
    return PipelineConfig.model_validate(base)


def test_composed_adaptation_logs_steps_forgetting_and_negative_transfer(ingested, tracker):
    import json

    ws, _ = ingested
    cfg = _composed_cfg(strategy="progressive", unfreeze_every=1, n_labelled=1, l2sp=0.01, ewc=0.1,
                        steps=["harmonise", "inpainting", "self_training", "adabn", "tent", "consistency_tta"],
                        tent_steps=2, inpainting_steps=2, pseudo_threshold=0.51)
    ctx = StageContext(ws=ws, cfg=cfg, tracker=tracker)
    src = pretrain_source(ctx, "north", ws.site_manifest("north"))
    res = adapt_site(ctx, "east", ws.site_manifest("east"), pretrained=src.weights_uri,
                     source_manifest=ws.site_manifest("north"))
    run = tracker.client.get_run(res.adapted_run_id)
    assert run.info.run_name == "east-progressive+harmonise+inpainting+self_training+adabn+tent+consistency_tta"
    assert {"forgetting", "source_dice_before", "source_dice_after", "test_dice"} <= set(run.data.metrics)
    assert run.data.metrics["forgetting"] == pytest.approx(
        run.data.metrics["source_dice_before"] - run.data.metrics["source_dice_after"])
    assert run.data.tags["negative_transfer"] in ("true", "false")
    steps = json.loads(open(tracker.client.download_artifacts(run.info.run_id, "adapt/steps.json")).read())
    assert steps["adabn_layers"] > 0 and steps["n_labelled"] == 1 and "pseudo_labelled" in steps
    assert len(steps["consistency_tta_loss_first_last"]) == 2 and len(steps["inpainting_loss_first_last"]) == 2
    version = tracker.client.get_model_version_by_alias("tlmed-liver-east", "challenger")
    assert version.tags["harmonised"] == "true" and version.tags["forgetting"]
    # the reviewer sees how the site differs from the source, with the site's parent run
    parent = tracker.client.get_run(res.parent_run_id)
    assert {a.path for a in tracker.client.list_artifacts(parent.info.run_id, "shift")} == \
        {"shift/summary.json", "shift/summary.png"}
    shift = json.loads(open(tracker.client.download_artifacts(parent.info.run_id, "shift/summary.json")).read())
    assert (shift["source"]["site"], shift["target"]["site"]) == ("north", "east")
    assert parent.data.metrics["shift_intensity_w1"] == pytest.approx(shift["intensity_w1"])
    # beside the true test Dice, the label-free estimate a site without labels would get
    assert 0 <= run.data.metrics["estimated_agreement"] <= 1 and "estimated_volume_z" in run.data.metrics
    assert 0 <= run.data.metrics["estimated_dice"] <= 1
    assert float(version.tags["estimated_dice"]) == pytest.approx(run.data.metrics["estimated_dice"], abs=1e-4)
    assert "estimated without labels" in version.description


@pytest.mark.parametrize("step", ["coral", "mean_teacher"])
def test_zero_labels_adapts_on_source_labels_and_has_no_scratch_baseline(ingested, tracker, step):
    ws, _ = ingested
    cfg = _composed_cfg(n_labelled=0, steps=[step], epochs=1)
    ctx = StageContext(ws=ws, cfg=cfg, tracker=tracker)
    src = pretrain_source(ctx, "north", ws.site_manifest("north"))
    res = adapt_site(ctx, "east", ws.site_manifest("east"), pretrained=src.weights_uri,
                     source_manifest=ws.site_manifest("north"))
    assert res.scratch_dice is None and res.strategy == f"finetune+{step}"
    names = {r.info.run_name for r in _all_runs(tracker)}
    assert "east-scratch" not in names and f"east-finetune+{step}" in names
    adapted = tracker.client.get_run(res.adapted_run_id)
    assert len(tracker.client.get_metric_history(res.adapted_run_id, "train_loss")) == 1  # trained on the source
    assert adapted.data.metrics["test_dice"] == pytest.approx(res.adapted_dice)


def test_a_site_adapts_from_both_sources_and_keeps_the_better_on_validation(ingested, tiny_cfg, tracker):
    import io

    from rich.console import Console

    from tl_med.cli.output import progress_view

    ws, _ = ingested
    cfg = tiny_cfg.model_copy(update={"pretrain": tiny_cfg.pretrain.model_copy(update={"alternate": "intensity"})})
    ctx = StageContext(ws=ws, cfg=cfg, tracker=tracker)
    src = pretrain_source(ctx, "north", ws.site_manifest("north"))
    alt = pretrain_source(ctx, "north", ws.site_manifest("north"), alternate=True)
    client = tracker.client
    assert str(client.get_model_version_by_alias("tlmed-liver-north", "challenger").version) == src.model_version
    assert str(client.get_model_version_by_alias("tlmed-liver-north", "alternate").version) == alt.model_version
    assert client.get_model_version("tlmed-liver-north", alt.model_version).tags["augment"] == "intensity"
    assert client.get_run(alt.run_id).data.params["pretrain.augment"] == "intensity"
    source, alternate = f"models:/tlmed-liver-north/{src.model_version}", "models:/tlmed-liver-north@alternate"
    buf = io.StringIO()
    with progress_view(Console(file=buf, width=1000)):
        res = adapt_site(ctx, "east", ws.site_manifest("east"), pretrained=source,
                         alternates=(alternate, "models:/tlmed-liver-north@nosuchalias"))
    runs = {r.info.run_name: r for r in _all_runs(tracker)}
    first, second = runs["east-finetune"], runs["east-finetune@intensity"]
    assert second.data.tags["pretrained_source"] == alternate and first.data.tags["pretrained_source"] == source
    val = {run.info.run_id: run.data.metrics["best_val_dice"] for run in (first, second)}
    kept = first if val[first.info.run_id] >= val[second.info.run_id] else second  # a tie keeps the source's
    assert res.adapted_run_id == kept.info.run_id and res.adapted_from == kept.data.tags["pretrained_source"]
    for run in (first, second):
        assert client.get_run(run.info.run_id).data.tags["source_chosen"] == str(run is kept).lower()
    version = client.get_model_version("tlmed-liver-east", res.model_version)
    assert version.run_id == kept.info.run_id and version.tags["pretrained_source"] == res.adapted_from
    assert client.get_run(res.parent_run_id).data.tags["chosen_source"] == res.adapted_from
    from tl_med.report import comparison

    (candidate,) = comparison(client, "liver", ["east"], "tlmed-test")[0].candidates  # the kept one
    assert candidate.version == res.model_version and candidate.adapted_dice == pytest.approx(res.adapted_dice)
    out = " ".join(buf.getvalue().split())
    kept_name, other_name = ("contrast", "intensity") if kept is first else ("intensity", "contrast")
    assert re.search(rf"east: kept the adaptation from the {kept_name} source \(validation Dice 0\.\d{{3}}, against "
                     rf"0\.\d{{3}} from the {other_name} source\)", out)
    assert "alternate source left out: pretrained source models:/tlmed-liver-north@nosuchalias" in out
    # with no target labels there is no validation to choose on: the source alone
    zero = cfg.model_copy(update={"adapt": cfg.adapt.model_copy(update={"n_labelled": 0})})
    res0 = adapt_site(StageContext(ws=ws, cfg=zero, tracker=tracker), "east", ws.site_manifest("east"),
                      pretrained=source, alternates=(alternate,))
    assert res0.adapted_from == source and len([r for r in _all_runs(tracker) if "@" in r.info.run_name]) == 1


def test_the_from_scratch_baseline_trains_like_the_adaptation_whatever_the_source_augmentation(ingested, tiny_cfg,
                                                                                                tracker):
    ws, _ = ingested
    losses = []
    for augment in ("contrast", "none"):  # the source's augmentation: none of the baseline's business
        cfg = tiny_cfg.model_copy(update={"pretrain": tiny_cfg.pretrain.model_copy(update={"augment": augment})})
        res = adapt_site(StageContext(ws=ws, cfg=cfg, tracker=tracker), "east", ws.site_manifest("east"),
                         pretrained=str(_checkpoint(tiny_cfg, ws)))
        scratch = next(r for r in _all_runs(tracker) if r.info.run_name == "east-scratch"
                       and r.data.tags["mlflow.parentRunId"] == res.parent_run_id)
        losses.append([m.value for m in tracker.client.get_metric_history(scratch.info.run_id, "train_loss")])
    assert losses[0] == losses[1] and len(losses[0]) == tiny_cfg.adapt.epochs


def _checkpoint(cfg, ws):
    path = ws.root / "start.pt"
    torch.manual_seed(0)
    torch.save(build_network(cfg.network).state_dict(), path)
    return path


def test_negative_transfer_rule():
    from tl_med.stages.adaptation import _negative_transfer

    assert _negative_transfer(0.80, 0.10, 0.75, 0.02) == ""
    assert "from-scratch 0.850" in _negative_transfer(0.80, 0.10, 0.85, 0.02)
    assert "source-only 0.900" in _negative_transfer(0.80, 0.90, None, 0.02)
    assert _negative_transfer(0.84, 0.10, 0.85, 0.02) == ""  # within the margin
