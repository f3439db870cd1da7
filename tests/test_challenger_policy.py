"""Who takes ``challenger`` (tl_med.challenger) and where unattended retraining starts
(tl_med.retrain_start.approved_source), against a real MLflow store."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tl_med.challenger import challenger_decision
from tl_med.errors import InputError
from tl_med.results import PipelineResult, result_document, result_rows, results_markdown
from tl_med.stages import SiteResult, StageContext, adapt_site, pretrain_source
from tl_med.retrain_start import approved_source

M1 = {"manifest_sha256": "m1", "negative_transfer": "false"}


@pytest.mark.parametrize("new, current, takes, words", [
    ({**M1, "test_dice": "0.9", "negative_transfer": "true", "negative_transfer_reason": "adapted Dice 0.9 below x"},
     None, False, "flagged for negative transfer: adapted Dice 0.9 below x"),
    ({**M1, "test_dice": "0.71"}, ("3", {**M1, "test_dice": "0.78"}), False,
     "test Dice 0.7100 below challenger v3's 0.7800 on the same test split"),
    ({**M1, "test_dice": "0.80"}, ("3", {**M1, "test_dice": "0.78"}), True,
     "test Dice 0.8000 ≥ challenger v3's 0.7800 on the same test split"),
    ({**M1, "test_dice": "0.78"}, ("3", {**M1, "test_dice": "0.78"}), True, "≥ challenger v3's"),  # a tie takes it
    ({**M1, "test_dice": "0.50"}, ("3", {**M1, "test_dice": "0.78", "manifest_sha256": "m0"}), True,
     "challenger v3 was evaluated on another test manifest: the test Dice cannot be compared"),
    ({**M1, "test_dice": "0.50"}, ("3", {**M1, "test_dice": "0.78", "negative_transfer": "true"}), True,
     "challenger v3 is flagged for negative transfer"),
    ({**M1, "test_dice": "0.50"}, None, True, "first version: no current challenger"),
])
def test_challenger_decision(new, current, takes, words):
    got, reason = challenger_decision(new, current)
    assert got is takes and words in reason


def _run(tracker) -> str:
    return tracker.client.create_run(tracker.experiment_id).info.run_id


def test_register_candidate_keeps_challenger_from_refused_versions(tracker):
    run, name, client = _run(tracker), "tlmed-liver-east", tracker.client

    def register(**tags):
        return tracker.register_candidate(f"runs:/{run}/model", name, run, tags={**M1, **tags}, description="d.")

    def holder() -> str:
        return str(client.get_model_version_by_alias(name, "challenger").version)

    first = register(test_dice="0.7800")
    assert (first.version, first.challenger, holder()) == ("1", True, "1")
    assert client.get_model_version(name, "1").tags["challenger_reason"] == "first version: no current challenger"
    negative = register(test_dice="0.9000", negative_transfer="true", negative_transfer_reason="below source-only")
    worse = register(test_dice="0.7100")
    for refused, words in ((negative, "flagged for negative transfer: below source-only"),
                           (worse, "test Dice 0.7100 below challenger v1's 0.7800 on the same test split")):
        tags = client.get_model_version(name, refused.version).tags
        assert not refused.challenger and refused.reason == words == tags["challenger_refused"]
        assert tags["candidate"] == "true" and "challenger_reason" not in tags and "previous_challenger" not in tags
        assert f"Did not take challenger: {words}." in client.get_model_version(name, refused.version).description
        assert holder() == "1"
    better = register(test_dice="0.8000")
    tags = client.get_model_version(name, better.version).tags
    assert better.challenger and holder() == better.version == "4" and tags["previous_challenger"] == "1"
    assert tags["challenger_reason"] == "test Dice 0.8000 ≥ challenger v1's 0.7800 on the same test split"
    assert "candidate" not in tags
    other = register(test_dice="0.5000", manifest_sha256="m2")
    assert other.challenger and holder() == "5"
    assert "evaluated on another test manifest" in client.get_model_version(name, "5").tags["challenger_reason"]


def test_a_refused_version_shows_in_the_table_and_the_json():
    common = dict(site="east", source_only_dice=0.5, adapted_dice=0.6, scratch_dice=None, parent_run_id="p",
                  adapted_run_id="a", model_name="tlmed-liver-east", model_version="2")
    refused = SiteResult(**common, challenger=False, challenger_reason="test Dice 0.6000 below challenger v1's 0.7000")
    outcome = PipelineResult(source=None, sites=[refused], pretrained="models:/tlmed-liver-north/1")
    assert result_rows([refused])[0][-1] == "tlmed-liver-east v2 (not challenger)"
    assert result_rows([SiteResult(**common)])[0][-1] == "tlmed-liver-east v2"
    assert "- east: tlmed-liver-east v2 is a candidate, not the challenger: test Dice 0.6000 below" in \
        results_markdown(outcome)
    model = result_document(outcome, command="retrain")["sites"][0]["model"]
    assert model == {"name": "tlmed-liver-east", "version": "2", "challenger": False,
                     "challenger_reason": "test Dice 0.6000 below challenger v1's 0.7000"}


def test_retrain_starts_from_the_champion_and_falls_back_to_challenger_only_without_one(tracker):
    from tl_med.retrain_start import pretrained_start
    from tl_med.approval import approve

    client, name = tracker.client, "tlmed-liver-north"
    sites = SimpleNamespace(task="liver", source=SimpleNamespace(name="north"))
    with pytest.raises(InputError, match="no source model 'tlmed-liver-north' is registered"):
        pretrained_start(tracker, sites.task, sites.source.name, None)
    assert pretrained_start(tracker, sites.task, sites.source.name, "/given/start.pt") == ("/given/start.pt", {}, "starting from "
                                                                                        "/given/start.pt")
    run = _run(tracker)
    for dice in ("0.80", "0.70"):  # v1, then v2 (the source model's registration always moves challenger)
        tracker.register(f"runs:/{run}/model", name, run, tags={"test_dice": dice, "source_only_dice": "0.1",
                                                                "negative_transfer": "false"}, description="")
    start, tags, line = pretrained_start(tracker, sites.task, sites.source.name, None)
    assert start == "models:/tlmed-liver-north/2" and line == tags["pretrained_fallback"] == (
        "no approved source model (champion) of tlmed-liver-north; started from challenger v2")
    assert (tags["pretrained_version"], tags["pretrained_alias"]) == ("2", "challenger")
    approve(client, "liver", "north", "1", approver="Dr. A", reason="reviewed")
    start, tags, line = pretrained_start(tracker, sites.task, sites.source.name, None)
    assert start == "models:/tlmed-liver-north/1" and "pretrained_fallback" not in tags
    assert (tags["pretrained_version"], tags["pretrained_alias"]) == ("1", "champion") and "champion" in line
    client.delete_registered_model_alias(name, "champion")  # had a champion: never silently the challenger
    with pytest.raises(InputError, match="v1 was approved before: not falling back"):
        approved_source(client, name)


def test_adapt_records_the_resolved_start_and_a_flagged_version_stays_a_candidate(ingested, tiny_cfg, tracker,
                                                                                   monkeypatch):
    import tl_med.stages.adaptation as adaptation

    ws, _ = ingested
    src = pretrain_source(StageContext(ws=ws, cfg=tiny_cfg, tracker=tracker), "north", ws.site_manifest("north"))
    start = approved_source(tracker.client, src.model_name)
    ctx = StageContext(ws=ws, cfg=tiny_cfg, tracker=tracker, trigger="schedule", extra_tags=start.tags())
    first = adapt_site(ctx, "east", ws.site_manifest("east"), pretrained=start.uri)
    parent = tracker.client.get_run(first.parent_run_id).data.tags
    assert parent["pretrained_source"] == f"models:/tlmed-liver-north/{src.model_version}"
    assert parent["pretrained_version"] == src.model_version and "started from challenger" in \
        parent["pretrained_fallback"]
    assert first.challenger and parent["challenger"] == "true" and parent["challenger_reason"].startswith("first")

    monkeypatch.setattr(adaptation, "_negative_transfer", lambda *a: "adapted Dice below source-only (forced)")
    second = adapt_site(ctx, "east", ws.site_manifest("east"), pretrained=start.uri)
    assert not second.challenger and second.challenger_reason == \
        "flagged for negative transfer: adapted Dice below source-only (forced)"
    holder = tracker.client.get_model_version_by_alias("tlmed-liver-east", "challenger")
    assert str(holder.version) == first.model_version != second.model_version
    tags = tracker.client.get_model_version("tlmed-liver-east", second.model_version).tags
    assert tags["candidate"] == "true" and tags["challenger_refused"] == second.challenger_reason
    assert tracker.client.get_run(second.parent_run_id).data.tags["challenger"] == "false"
