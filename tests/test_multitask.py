"""Multi-task learning: a class head on the shared encoder, the joint loss, case-level AUC beside Dice."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.adapt.test_strategies import TINY, tiny_input, tiny_network
from tl_med.adapt.blocks import network_blocks
from tl_med.adapt.strategies import FineTune
from tl_med.config import LoopConfig
from tl_med.errors import InputError
from tl_med.inference import window_inferer
from tl_med.models.zoo import build_network
from tl_med.multitask import attach_class_head, case_class_probabilities, class_loss
from tl_med.stages import StageContext, adapt_site
from tl_med.train import fit


def _spec_of(package):
    from tl_med.models.spec import load_package

    return load_package(package)[1]


def result_image(ws) -> str:
    from tl_med.manifests import datalist

    return datalist(ws.site_manifest("east"), "test")[0]["image"]


@pytest.mark.parametrize("name", list(TINY))
def test_the_head_sits_on_the_bottleneck_and_trains_with_the_output_head(name):
    net = tiny_network(name)
    head = attach_class_head(net, 3)
    out = net(tiny_input(name))
    assert out.shape[1] == 2 and tuple(head.logits().shape) == (2, 3)  # segmentation unchanged
    blocks = network_blocks(net)
    assert {"class_head.fc.weight", "class_head.fc.bias"} <= set(blocks[-1].names)
    groups = FineTune(lr=1e-2, layer_decay=0.5).param_groups(net)
    assert groups[-1]["lr"] == 1e-2 and any(p is head.fc.weight for p in groups[-1]["params"])


def test_class_loss_ignores_cases_without_a_class():
    net = tiny_network("UNet")
    attach_class_head(net, 2)
    net(tiny_input("UNet"))
    assert class_loss(net, torch.tensor([-1, -1])) is None
    one = class_loss(net, torch.tensor([1, -1]))
    assert one is not None and one.ndim == 0 and torch.isfinite(one)
    assert class_loss(tiny_network("UNet"), torch.tensor([0, 1])) is None  # no head: single task


def test_the_joint_loss_trains_the_head_and_the_weight_switches_it_off():
    torch.manual_seed(0)
    batches = [{"image": torch.randn(2, 1, 16, 16, 16), "label": (torch.rand(2, 1, 16, 16, 16) > 0.5).float(),
                "class": torch.tensor([0, 1])} for _ in range(2)]
    moved = {}
    for weight in (0.0, 1.0):
        net = tiny_network("UNet")
        head = attach_class_head(net, 2)
        before = head.fc.weight.detach().clone()
        fit(net, batches, None, torch.optim.SGD(net.parameters(), lr=0.1), epochs=1, device=torch.device("cpu"),
            loop=LoopConfig(class_weight=weight))
        moved[weight] = not torch.equal(before, head.fc.weight)
    assert moved == {0.0: False, 1.0: True}


def test_case_probabilities_weigh_windows_by_segmented_foreground():
    net = tiny_network("UNet").eval()
    attach_class_head(net, 2)
    probs = case_class_probabilities(net, torch.randn(1, 40, 36, 30),
                                     window_inferer((16, 16, 16), __import__("tl_med.config").config.InferenceConfig()))
    assert probs.shape == (2,) and np.isclose(probs.sum(), 1.0) and (probs > 0).all()


def test_a_multitask_adaptation_reports_dice_and_auc_for_the_model_and_its_baselines(ingested, tiny_cfg, tracker,
                                                                                     tmp_path):
    ws, _ = ingested
    start = tmp_path / "start.pt"
    torch.save(build_network(tiny_cfg.network).state_dict(), start)
    cfg = tiny_cfg.model_copy(update={"adapt": tiny_cfg.adapt.model_copy(update={"strategy": "multitask"})})
    ctx = StageContext(ws=ws, cfg=cfg, tracker=tracker)
    result = adapt_site(ctx, "east", ws.site_manifest("east"), pretrained=str(start))
    assert result.strategy == "multitask" and 0 <= result.adapted_dice <= 1
    assert result.classification["source_only"] is None  # the source model has no class head
    for model in ("from_scratch", "adapted"):
        m = result.classification[model]
        assert m["n_cases"] == 2 and (m["auc"] is None or 0 <= m["auc_low"] <= m["auc"] <= m["auc_high"] <= 1)
    client = tracker.client
    run = client.get_run(result.adapted_run_id)
    assert {"test_dice", "test_balanced_accuracy", "test_ece"} <= set(run.data.metrics)
    cases = json.loads(open(client.download_artifacts(run.info.run_id, "metrics/test_classes.json")).read())
    assert cases["classes"] == ["normal", "enlarged"] and len(cases["cases"]) == 2
    report = json.loads(open(client.download_artifacts(run.info.run_id, "transfer/weights_report.json")).read())
    assert {"class_head.fc.weight", "class_head.fc.bias"} <= set(report["missing_keys"])  # newly initialised
    spec = json.loads(open(client.download_artifacts(run.info.run_id, "package/tlmed-model.json")).read())
    assert spec["classes"] == ["normal", "enlarged"]
    from tl_med.models.spec import load_package

    package = __import__("pathlib").Path(client.download_artifacts(run.info.run_id, "package"))
    model, _ = load_package(package)
    assert hasattr(model, "class_head")  # the package rebuilds the head it was trained with
    from tl_med.inference import Predictor

    predicted = Predictor(model, _spec_of(package), torch.device("cpu")).predict(result_image(ws))
    assert set(predicted.classes) == {"normal", "enlarged"} and sum(predicted.classes.values()) == pytest.approx(1, abs=1e-3)
    from tl_med.export.bundle import export_bundle

    bundle = export_bundle(package, tmp_path / "bundle", name="tlmed-liver-east", version="1", source="test")
    weights = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("class_head.") for k in weights)  # the bundle is the segmentation network
    build_network(tiny_cfg.network).load_state_dict(weights)
    from tl_med.results import PipelineResult, result_document, results_markdown

    doc = result_document(PipelineResult(source=None, sites=[result]), command="adapt")
    assert doc["sites"][0]["classification"]["source_only"] is None
    assert "east case-level AUC: source-only n/a (no class head)" in results_markdown(
        PipelineResult(source=None, sites=[result]))


def test_multitask_on_a_site_without_classes_is_refused_before_any_run(ingested, tiny_cfg, tracker, tmp_path):
    from tl_med.manifests import load_manifest, write_manifest

    ws, _ = ingested
    manifest = load_manifest(ws.site_manifest("east")).model_copy(update={"classes": ()})
    path = write_manifest(manifest, tmp_path / "east.json")
    cfg = tiny_cfg.model_copy(update={"adapt": tiny_cfg.adapt.model_copy(update={"strategy": "multitask"})})
    with pytest.raises(InputError, match="strategy multitask needs case-level classes"):
        adapt_site(StageContext(ws=ws, cfg=cfg, tracker=tracker), "east", path, pretrained="none.pt")
    assert not tracker.client.search_runs([tracker.experiment_id])


def test_the_head_learns_a_class_the_images_show():
    """Large versus small bright spheres: after a short joint training the case-level probabilities
    (whole image, weighted windows) rank the training cases by class (guards sign and pairing bugs)."""
    from tl_med.classify import class_metrics
    from tl_med.config import InferenceConfig

    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(20)] * 3, indexing="ij"), -1)
    images, labels, classes = [], [], []
    for k in range(12):
        klass = k % 2
        radius = rng.uniform(6, 8) if klass else rng.uniform(3, 4.5)
        mask = np.linalg.norm(grid - 10 + rng.uniform(-2, 2, 3), axis=-1) < radius
        images.append(torch.as_tensor(mask + rng.normal(0, 0.3, mask.shape), dtype=torch.float32)[None])
        labels.append(torch.as_tensor(mask, dtype=torch.float32)[None])
        classes.append(klass)
    batches = [{"image": torch.stack(images[i:i + 4]), "label": torch.stack(labels[i:i + 4]),
                "class": torch.tensor(classes[i:i + 4])} for i in range(0, 12, 4)]
    torch.manual_seed(0)
    net = tiny_network("UNet")
    attach_class_head(net, 2)
    fit(net, batches, None, torch.optim.Adam(net.parameters(), lr=3e-3), epochs=60, device=torch.device("cpu"),
        loop=LoopConfig(class_weight=1.0))
    window = window_inferer((16, 16, 16), InferenceConfig())
    probs = [case_class_probabilities(net, image, window) for image in images]
    assert class_metrics(classes, probs, n_boot=10).auc >= 0.9
