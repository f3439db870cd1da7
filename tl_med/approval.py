"""The approval gate: a named person moves ``champion``; the pipeline never does.

``approve`` refuses a candidate version that

* was flagged for negative transfer (version tag ``negative_transfer=true``),
* scores below the source-only baseline on its own test manifest,
* scores below the current champion, or cannot be compared with it because the champion was
  evaluated on another test manifest,

unless an override reason is given (recorded as such). Every decision is written to MLflow twice:
as tags of the version (``decision``, ``decided_by``, ``decided_at``, ``decision_reason``,
``decision_override`` and the metrics at the time) and as one ``decision.<time>`` tag of the
registered model, so the history is readable from MLflow alone. A refusal or an error changes
nothing; if moving the alias fails, the tags are rolled back, and if tagging fails the alias is
moved back.

Example:
    >>> # approve(client, "liver", "east", "3", approver="Dr. A. Chen", reason="reviewed overlays")
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tl_med.errors import InputError, TlMedError
from tl_med.tracking import CHAMPION, registered_model_name

__all__ = ["Decision", "VersionRow", "approve", "reject", "list_versions", "recorded_decisions", "CHAMPION"]

_DECISION_PREFIX = "decision."  # + time: one registered-model tag per decision (recorded_decisions)
_DECISION_TAGS = ("decision", "decided_by", "decided_at", "decision_reason", "decision_override",
                  "champion_test_dice_at_decision", "previous_champion")


@dataclass(frozen=True)
class Decision:
    site: str
    model: str
    version: str
    decision: str
    approver: str
    reason: str
    override: str
    at: str
    previous_champion: str
    test_dice: float | None = None  # the version's own test Dice (labels on its test split)
    estimated_dice: float | None = None  # the label-free estimate on the same images (tl_med.quality)

    def evidence(self) -> str:
        """``test Dice 0.812, estimated 0.744 without labels`` (what was known when deciding)."""
        parts = [f"test Dice {self.test_dice:.3f}" if self.test_dice is not None else "no test Dice",
                 f"estimated {self.estimated_dice:.3f} without labels" if self.estimated_dice is not None else ""]
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class VersionRow:
    site: str
    model: str
    version: str
    aliases: tuple[str, ...]
    tags: dict[str, str]


def _call(what: str, fn, *args: Any, **kwargs: Any) -> Any:
    """An MLflow call whose failure becomes one clear line (server down, bad name ...)."""
    try:
        return fn(*args, **kwargs)
    except MlflowException as exc:
        first = str(exc).splitlines()[0][:200]
        if "error code 403" in first:  # basic-auth's plain-text refusal: say what it means
            first = "the tracking server refused it (HTTP 403): this account lacks the permission"
        raise TlMedError(f"{what}: {first}") from None
    except Exception as exc:  # noqa: BLE001 - connection errors come in many types
        raise TlMedError(f"{what}: tracking server unreachable ({type(exc).__name__})") from None


def _version(client: MlflowClient, name: str, version: str):
    _call(f"no registered model '{name}' (has the pipeline run for this site?)", client.get_registered_model, name)
    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise InputError(f"model '{name}' has no version {version}") from None


def _champion(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def _float(tags: dict[str, str], key: str) -> float | None:
    try:
        return float(tags[key])
    except (KeyError, ValueError):
        return None


def _evidence(candidate) -> tuple[float | None, float | None]:
    return _float(candidate.tags, "test_dice"), _float(candidate.tags, "estimated_dice")


def _objections(candidate, champion) -> list[str]:
    tags = candidate.tags
    dice, source_only = _float(tags, "test_dice"), _float(tags, "source_only_dice")
    found = []
    if tags.get("negative_transfer") == "true":
        found.append("it was flagged for negative transfer")
    if dice is None:
        found.append("it has no test_dice tag to judge it by")
    elif source_only is not None and dice < source_only:
        found.append(f"its test Dice {dice:.4f} is below the source-only baseline {source_only:.4f}")
    if champion is not None and champion.version != candidate.version and dice is not None:
        if champion.tags.get("manifest_sha256") != tags.get("manifest_sha256"):
            found.append(f"champion v{champion.version} was evaluated on another test manifest, so they cannot be "
                         "compared")
        elif (champ := _float(champion.tags, "test_dice")) is not None and dice < champ:
            found.append(f"its test Dice {dice:.4f} is below champion v{champion.version}'s {champ:.4f}")
    return found


def recorded_decisions(model_tags: dict[str, str] | None) -> list[tuple[str, dict[str, Any]]]:
    """Each decision :func:`_record` left on a registered model: ``(time, {"version", "decision",
    "by", "reason", "override", "previous_champion"})``, in tag order (unreadable records skipped)."""
    found = []
    for key, value in (model_tags or {}).items():
        if key.startswith(_DECISION_PREFIX):
            try:
                found.append((key.removeprefix(_DECISION_PREFIX), json.loads(value)))
            except ValueError:
                continue
    return found


def _record(client: MlflowClient, name: str, decision: Decision, champion_dice: float | None) -> None:
    tags = {"decision": decision.decision, "decided_by": decision.approver, "decided_at": decision.at,
            "decision_reason": decision.reason, "decision_override": decision.override,
            "champion_test_dice_at_decision": "" if champion_dice is None else f"{champion_dice:.4f}",
            "previous_champion": decision.previous_champion}
    for key, value in tags.items():
        client.set_model_version_tag(name, decision.version, key, value)
    client.set_registered_model_tag(name, f"{_DECISION_PREFIX}{decision.at}", json.dumps(
        {"version": decision.version, "decision": decision.decision, "by": decision.approver,
         "reason": decision.reason, "override": decision.override,
         "previous_champion": decision.previous_champion}))


def _check_person(approver: str, reason: str) -> None:
    if not approver.strip():
        raise InputError("an approver name is required (--approver)")
    if not reason.strip():
        raise InputError("a reason is required (--reason)")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def approve(client: MlflowClient, task: str, site: str, version: str, *, approver: str, reason: str,
            override: str = "") -> Decision:
    """Move ``champion`` to ``version`` after the checks above; raises with every objection."""
    _check_person(approver, reason)
    name = registered_model_name(task, site)
    candidate = _version(client, name, version)
    champion = _champion(client, name)
    objections = _objections(candidate, champion)
    if objections and not override.strip():
        raise TlMedError(f"refusing to approve {name} v{version}: " + "; ".join(objections)
                         + " (use --override with a reason to approve anyway)")
    decision = Decision(site, name, str(candidate.version), "approved", approver.strip(), reason.strip(),
                        override.strip() if objections else "", _now(),
                        "" if champion is None else str(champion.version), *_evidence(candidate))
    _call(f"could not move {CHAMPION} of {name}", client.set_registered_model_alias, name, CHAMPION,
          decision.version)
    try:
        _record(client, name, decision, None if champion is None else _float(champion.tags, "test_dice"))
    except BaseException:
        if champion is None:
            client.delete_registered_model_alias(name, CHAMPION)
        else:
            client.set_registered_model_alias(name, CHAMPION, champion.version)
        for key in _DECISION_TAGS:
            try:
                client.delete_model_version_tag(name, decision.version, key)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        raise
    return decision


def reject(client: MlflowClient, task: str, site: str, version: str, *, approver: str, reason: str) -> Decision:
    """Record that a person rejected ``version``; aliases do not move."""
    _check_person(approver, reason)
    name = registered_model_name(task, site)
    candidate = _version(client, name, version)
    champion = _champion(client, name)
    decision = Decision(site, name, str(candidate.version), "rejected", approver.strip(), reason.strip(), "",
                        _now(), "" if champion is None else str(champion.version), *_evidence(candidate))
    _call(f"could not record the rejection of {name} v{version}", _record, client, name, decision,
          None if champion is None else _float(champion.tags, "test_dice"))
    return decision


def list_versions(client: MlflowClient, task: str, sites: list[str]) -> list[VersionRow]:
    """Every registered version of every site's model, newest first."""
    rows = []
    for site in sites:
        name = registered_model_name(task, site)
        versions = _call(f"could not list versions of {name}", client.search_model_versions, f"name='{name}'")
        if not versions:
            continue
        aliases = _call(f"could not read {name}", client.get_registered_model, name).aliases or {}
        for v in sorted(versions, key=lambda v: -int(v.version)):
            mine = tuple(sorted(a for a, n in aliases.items() if str(n) == str(v.version)))
            rows.append(VersionRow(site, name, str(v.version), mine, dict(v.tags)))
    return rows
