"""A zero-label adaptation knows how its source model was trained, and says when it will not help."""

import io

import pytest
from rich.console import Console

from tl_med.cli.output import progress_view
from tl_med.stages import StageContext, adapt_site, pretrain_source
from tl_med.zero_label import source_augmentation, zero_label_caveat


@pytest.fixture
def printed():
    """What the user's front end prints (wide, so that no line wraps)."""
    buf = io.StringIO()
    with progress_view(Console(file=buf, width=1000)):
        yield buf


def _caveats(buf: io.StringIO) -> list[str]:
    return [line for line in buf.getvalue().splitlines() if "no target labels" in line]


def test_caveat_names_the_site_source_and_augmentation_and_is_silent_for_a_contrast_source():
    line = zero_label_caveat("east", "models:/tlmed-liver-north/3", "intensity")
    assert line.startswith("east: no target labels, and the source model models:/tlmed-liver-north/3 was "
                           "pretrained with 'intensity' augmentation") and "\n" not in line
    assert "unrecorded augmentation" in zero_label_caveat("east", "bundle.zip", None)
    assert zero_label_caveat("east", "models:/tlmed-liver-north/3", "contrast") is None


def test_source_augmentation_is_unknown_for_anything_but_a_readable_registered_version(tracker):
    client = tracker.client
    assert source_augmentation("runs:/abc/weights", client) is None
    assert source_augmentation("/models/bundle.zip", client) is None
    assert source_augmentation("models:/no-such-model@challenger", client) is None
    assert source_augmentation("models:/no-such-model/1", client) is None


def test_zero_label_adaptation_from_an_intensity_source_warns_and_tags_the_run(ingested, tiny_cfg, tracker, printed):
    ws, _ = ingested
    cfg = tiny_cfg.model_copy(update={
        "pretrain": tiny_cfg.pretrain.model_copy(update={"augment": "intensity"}),
        "adapt": tiny_cfg.adapt.model_copy(update={"n_labelled": 0, "steps": ("mean_teacher",), "epochs": 1})})
    ctx = StageContext(ws=ws, cfg=cfg, tracker=tracker)
    src = pretrain_source(ctx, "north", ws.site_manifest("north"))
    version = tracker.client.get_model_version(src.model_name, src.model_version)
    assert (version.tags["augment"], version.tags["epochs"]) == (cfg.pretrain.augment, str(cfg.pretrain.epochs))
    uri = f"models:/{src.model_name}@challenger"
    assert source_augmentation(uri, tracker.client) == cfg.pretrain.augment == "intensity"
    assert source_augmentation(src.weights_uri, tracker.client) == "intensity"  # the run the pipeline adapts from
    res = adapt_site(ctx, "east", ws.site_manifest("east"), pretrained=uri, source_manifest=ws.site_manifest("north"))
    assert _caveats(printed) == [zero_label_caveat("east", uri, "intensity")]
    assert tracker.client.get_run(res.parent_run_id).data.tags["source_augment"] == "intensity"
    printed.seek(0), printed.truncate()
    labelled = ctx.cfg.model_copy(update={"adapt": cfg.adapt.model_copy(update={"n_labelled": 1, "steps": ()})})
    adapt_site(StageContext(ws=ws, cfg=labelled, tracker=tracker), "east", ws.site_manifest("east"), pretrained=uri)
    assert not _caveats(printed)  # labelled target cases: no caveat
