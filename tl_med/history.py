"""Each alias move of a site's model: from tl_med's own records and, when present, the server's audit log.

tl_med's records are the tags it writes: ``decision.<time>`` on the registered model (who approved or
rejected which version, why, with what override; see :mod:`tl_med.approval`) and ``previous_challenger``
on each version the pipeline registered. A tracking server started with ``--app-name tlmed-auth``
also keeps its own append-only log (:mod:`tl_med.registry_auth`) with the *authenticated account* of
every alias set/delete, refusals included. Where both describe the same ``champion`` move they are
shown as one row.

Example:
    >>> # for c in alias_history(MlflowClient(uri), uri, "tlmed-liver-east"): print(c.at, c.who, c.alias, c.version)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

from mlflow import MlflowClient

from tl_med.approval import recorded_decisions
from tl_med.errors import TlMedError

__all__ = ["AliasChange", "recorded_changes", "server_changes", "alias_history", "AUDIT_ENDPOINT"]

AUDIT_ENDPOINT = "/api/2.0/mlflow/tlmed/alias-audit"
_MATCH_SECONDS = 120.0


@dataclass(frozen=True)
class AliasChange:
    """One row of the history; ``source`` is ``tl_med``, ``server`` or ``tl_med+server``."""

    at: str
    who: str
    alias: str
    action: str  # set | delete | delete-version | delete-model | rejected | refused (a candidate kept out of
    # challenger) | denied (refused by the server)
    version: str
    previous: str
    reason: str = ""
    override: str = ""
    source: str = "tl_med"
    account: str = ""  # the authenticated account, when the server recorded it


def _iso(ms: int | None) -> str:
    if not ms:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds(at: str) -> float | None:
    try:
        return dt.datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc).timestamp()
    except ValueError:
        return None


def recorded_changes(client: MlflowClient, name: str) -> list[AliasChange]:
    """Moves tl_med recorded itself: approvals/rejections (champion) and registrations (challenger)."""
    model = client.get_registered_model(name)
    changes = []
    for at, d in recorded_decisions(model.tags):
        approved = d.get("decision") == "approved"
        changes.append(AliasChange(at=at, who=d.get("by", ""), alias="champion",
                                   action="set" if approved else "rejected", version=str(d.get("version", "")),
                                   previous=d.get("previous_champion", ""), reason=d.get("reason", ""),
                                   override=d.get("override", "")))
    for v in client.search_model_versions(f"name='{name}'"):
        tags = v.tags or {}
        if "previous_challenger" in tags or tags.get("test_dice") is not None:  # registered by the pipeline
            refused = tags.get("challenger_refused")  # a candidate that did not take challenger (tl_med.challenger)
            changes.append(AliasChange(at=_iso(v.creation_timestamp), who=v.user_id or "pipeline", alias="challenger",
                                       action="refused" if refused else "set", version=str(v.version),
                                       previous=tags.get("previous_challenger", ""),
                                       reason=refused or tags.get("challenger_reason", "registered by the pipeline")))
    return changes


def server_changes(tracking_uri: str, name: str) -> list[AliasChange] | None:
    """The server's audit events for ``name``; None when the server keeps none (not tlmed-auth, or no server)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        resp = http_request(get_default_host_creds(tracking_uri), AUDIT_ENDPOINT, "GET", max_retries=0,
                            params={"name": name, "max_results": 10000}, raise_on_status=False)
    except Exception as exc:  # noqa: BLE001 - connection errors come in many types
        raise TlMedError(f"could not read the server's alias audit log: tracking server unreachable "
                         f"({type(exc).__name__})") from None
    if resp.status_code == 404:
        return None
    if resp.status_code != 200:
        raise TlMedError(f"could not read the server's alias audit log: HTTP {resp.status_code}")
    return [_from_event(e) for e in resp.json().get("events", [])]


def _from_event(e: dict[str, Any]) -> AliasChange:
    action = e.get("action", "") if e.get("outcome") == "ok" else "denied"
    return AliasChange(at=e.get("at", ""), who=e.get("username", ""), alias=e.get("alias", ""), action=action,
                       version=e.get("version") or "", previous=e.get("previous_version") or "", source="server",
                       account=e.get("username", ""), reason="" if action != "denied" else f"refused {e.get('action')}")


def _merge(ours: list[AliasChange], theirs: list[AliasChange]) -> list[AliasChange]:
    """Join each approval with the server's record of the same champion move (same version, close in time)."""
    merged, unused = [], list(theirs)
    for change in ours:
        match = None
        if change.action == "set" and change.alias == "champion":
            t0 = _seconds(change.at)
            for event in unused:
                t1 = _seconds(event.at)
                if (event.action == "set" and event.alias == "champion" and event.version == change.version
                        and t0 is not None and t1 is not None and abs(t1 - t0) <= _MATCH_SECONDS):
                    match = event
                    break
        if match is None:
            merged.append(change)
            continue
        unused.remove(match)
        merged.append(replace(change, at=match.at, account=match.account, previous=match.previous or change.previous,
                              source="tl_med+server"))
    return merged + unused


def alias_history(client: MlflowClient, tracking_uri: str, name: str) -> list[AliasChange]:
    """All known moves of ``name``'s aliases, oldest first."""
    ours = recorded_changes(client, name)
    theirs = server_changes(tracking_uri, name)
    if theirs is not None:
        # the server saw every challenger move with its account: prefer those rows to our reconstruction
        if any(e.alias == "challenger" for e in theirs):
            ours = [c for c in ours if c.alias != "challenger"]
        ours = _merge(ours, theirs)
    return sorted(ours, key=lambda c: c.at)
