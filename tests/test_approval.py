"""The champion gate: a person approves, the checks refuse what should not ship, MLflow keeps it all."""

import pytest
from mlflow import MlflowClient

from tl_med.approval import approve, list_versions, reject
from tl_med.errors import InputError, TlMedError


@pytest.fixture
def registry(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("t", artifact_location=str(tmp_path / "art"))
    run = client.create_run(exp).info.run_id
    client.create_registered_model("tlmed-liver-east")

    def add(**tags):
        base = {"test_dice": "0.80", "source_only_dice": "0.10", "negative_transfer": "false",
                "manifest_sha256": "m1"}
        return client.create_model_version("tlmed-liver-east", f"runs:/{run}/model", run_id=run,
                                           tags={**base, **tags}).version.__str__()

    return client, add


def test_first_approval_then_a_better_one_moves_champion_and_records_everything(registry):
    client, add = registry
    v1, v2 = add(), add(test_dice="0.85", estimated_dice="0.7712")
    d1 = approve(client, "liver", "east", v1, approver="Dr. A. Chen", reason="overlays reviewed")
    assert d1.previous_champion == "" and d1.evidence() == "test Dice 0.800"  # no estimate logged: none shown
    d2 = approve(client, "liver", "east", v2, approver="Dr. B. Osei", reason="better on the same test set")
    assert (d2.test_dice, d2.estimated_dice) == (0.85, 0.7712)
    assert d2.evidence() == "test Dice 0.850, estimated 0.771 without labels"
    assert str(client.get_model_version_by_alias("tlmed-liver-east", "champion").version) == v2
    tags = client.get_model_version("tlmed-liver-east", v2).tags
    assert tags["decision"] == "approved" and tags["decided_by"] == "Dr. B. Osei"
    assert tags["previous_champion"] == v1 and tags["champion_test_dice_at_decision"] == "0.8000"
    history = client.get_registered_model("tlmed-liver-east").tags
    assert len([k for k in history if k.startswith("decision.")]) == 2 and d2.at


@pytest.mark.parametrize("tags, words", [
    ({"negative_transfer": "true"}, "flagged for negative transfer"),
    ({"test_dice": "0.05"}, "below the source-only baseline"),
    ({"test_dice": "0.70"}, "below champion v1's 0.8000"),
    ({"manifest_sha256": "other"}, "evaluated on another test manifest"),
])
def test_refusals_change_nothing_unless_overridden(registry, tags, words):
    client, add = registry
    v1 = add()
    approve(client, "liver", "east", v1, approver="A", reason="first")
    bad = add(**tags)
    with pytest.raises(TlMedError, match=words):
        approve(client, "liver", "east", bad, approver="A", reason="try")
    assert str(client.get_model_version_by_alias("tlmed-liver-east", "champion").version) == v1
    assert "decision" not in client.get_model_version("tlmed-liver-east", bad).tags
    d = approve(client, "liver", "east", bad, approver="A", reason="try", override="clinical need, reviewed")
    assert d.override == "clinical need, reviewed"
    assert client.get_model_version("tlmed-liver-east", bad).tags["decision_override"] == d.override


def test_reject_records_and_moves_nothing(registry):
    client, add = registry
    v1 = add()
    reject(client, "liver", "east", v1, approver="A", reason="artefacts on two cases")
    assert client.get_model_version("tlmed-liver-east", v1).tags["decision"] == "rejected"
    rows = list_versions(client, "liver", ["east"])
    assert [r.version for r in rows] == [v1] and rows[0].aliases == ()
    v2 = add(test_dice="0.9")
    approve(client, "liver", "east", v2, approver="A", reason="good")
    client.set_registered_model_alias("tlmed-liver-east", "challenger", v2)
    assert [(r.version, r.aliases) for r in list_versions(client, "liver", ["east"])] == \
        [(v2, ("challenger", "champion")), (v1, ())]


@pytest.mark.parametrize("kwargs, error, words", [
    ({"version": "99"}, InputError, "has no version 99"),
    ({"approver": " "}, InputError, "approver name is required"),
    ({"reason": ""}, InputError, "reason is required"),
])
def test_bad_requests_are_one_line_errors(registry, kwargs, error, words):
    client, add = registry
    add()
    args = {"version": "1", "approver": "A", "reason": "r", **kwargs}
    with pytest.raises(error, match=words):
        approve(client, "liver", "east", args.pop("version"), **args)


def test_unknown_site_model_and_unreachable_server(registry, monkeypatch):
    client, _ = registry
    with pytest.raises(TlMedError, match="no registered model 'tlmed-liver-west'"):
        approve(client, "liver", "west", "1", approver="A", reason="r")
    down = MlflowClient("http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(TlMedError, match="tlmed-liver-east"):
        approve(down, "liver", "east", "1", approver="A", reason="r")
