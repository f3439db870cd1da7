"""The per-site comparison report: every candidate a site has had, each beside its own baselines.

A *candidate* is one adaptation of a site (an ``adapt-<site>`` parent run): its strategy and label
count, the source-only and from-scratch baselines trained and tested beside it on the same test
split, the adapted model's Dice/HD95, forgetting, the negative-transfer flag, and the registered
version it became (with its aliases and the approval decision). Read from MLflow alone; written as
Markdown, HTML and a JSON document (``tl-med report --json``); logged to each site's latest parent
run.

Example:
    >>> # sites = comparison(MlflowClient(uri), "liver", ["east", "west"])
    >>> # print(to_markdown(sites))
"""

from __future__ import annotations

import datetime as dt
import html
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tl_med.errors import TlMedError
from tl_med.tracking import registered_model_name

__all__ = ["Candidate", "SiteComparison", "comparison", "to_markdown", "to_html", "report_document", "COLUMNS",
           "REPORT_SCHEMA"]

REPORT_SCHEMA = "tl_med.report/1"
COLUMNS = ("version", "aliases", "started (UTC)", "strategy", "labels", "source-only Dice", "from-scratch Dice",
           "adapted Dice", "adapted HD95 mm", "forgetting", "negative transfer", "decision", "trigger", "parent run")


@dataclass(frozen=True)
class Candidate:
    """One adaptation of a site, its baselines, and what became of its model."""

    parent_run_id: str
    started: str
    strategy: str
    labels: int | None
    source_only_dice: float | None
    scratch_dice: float | None
    adapted_dice: float | None
    adapted_hd95: float | None
    forgetting: float | None
    negative_transfer: str  # "" (no) or the reason
    version: str = ""
    aliases: tuple[str, ...] = ()
    decision: str = ""
    trigger: str = ""
    runs: dict[str, str] = field(default_factory=dict)  # role -> MLflow run id

    def row(self) -> tuple[str, ...]:
        return (f"v{self.version}" if self.version else "-", ", ".join(self.aliases), self.started, self.strategy,
                "" if self.labels is None else str(self.labels), _fmt(self.source_only_dice),
                _fmt(self.scratch_dice), _fmt(self.adapted_dice), _fmt(self.adapted_hd95, 1), _fmt(self.forgetting),
                "YES" if self.negative_transfer else "no", self.decision, self.trigger, self.parent_run_id)


@dataclass(frozen=True)
class SiteComparison:
    site: str
    candidates: list[Candidate]  # newest first
    champion: str = "none"
    challenger: str = "none"

    @property
    def parent_run_id(self) -> str:
        """The newest candidate's parent run."""
        return self.candidates[0].parent_run_id


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _metric(metrics: dict[str, float], key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None or not math.isfinite(value) else float(value)


def _versions(client: MlflowClient, name: str) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The model's versions by run id, and its aliases by version."""
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return {}, {}
    by_run = {v.run_id: v for v in client.search_model_versions(f"name = '{name}'")}
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    return by_run, aliases


def _candidate(parent, children: list, versions: dict[str, Any], aliases: dict[str, list[str]]) -> Candidate:
    by_strategy = {c.data.tags.get("strategy", ""): c for c in children}
    tried = [c for s, c in by_strategy.items() if s not in ("source_only", "scratch")]
    # adapted from several sources: the one kept on validation (tl_med.stages.adaptation)
    adapted = next((c for c in tried if c.data.tags.get("source_chosen") == "true"), tried[0] if tried else None)
    pm = parent.data.metrics
    am = adapted.data.metrics if adapted else {}
    version = versions.get(adapted.info.run_id) if adapted else None
    labels = parent.data.params.get("n_labelled")
    tags = version.tags if version else {}
    decision = tags.get("decision", "") + (" (override)" if tags.get("decision_override") else "")
    return Candidate(
        parent_run_id=parent.info.run_id,
        started=dt.datetime.fromtimestamp(parent.info.start_time / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        strategy=parent.data.params.get("strategy", ""), labels=int(labels) if labels not in (None, "") else None,
        source_only_dice=_metric(pm, "source_only_dice"), scratch_dice=_metric(pm, "scratch_dice"),
        adapted_dice=_metric(am, "test_dice") if adapted else _metric(pm, "adapted_dice"),
        adapted_hd95=_metric(am, "test_hd95"), forgetting=_metric(pm, "forgetting"),
        negative_transfer=(adapted.data.tags.get("negative_transfer_reason", "") or "flagged")
        if adapted and adapted.data.tags.get("negative_transfer") == "true" else "",
        version=str(version.version) if version else "",
        aliases=tuple(sorted(aliases.get(str(version.version), []))) if version else (),
        decision=decision + (f" by {tags['decided_by']}" if tags.get("decided_by") else ""),
        trigger=parent.data.tags.get("trigger", ""),
        runs={c.data.tags.get("strategy", c.info.run_name): c.info.run_id for c in children})


def _alias_line(client: MlflowClient, name: str, alias: str) -> str:
    try:
        v = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return "none"
    return f"v{v.version}: test Dice {v.tags.get('test_dice', '?')}, strategy {v.tags.get('strategy', '?')}"


def comparison(client: MlflowClient, task: str, sites: list[str],
               experiment_name: str | None = None) -> list[SiteComparison]:
    """Every candidate of each site that has an ``adapt-<site>`` run, newest first (in the task's
    experiment ``tlmed-<task>`` unless ``experiment_name`` says otherwise). Runs that failed are
    left out (their model versions were discarded)."""
    name = experiment_name or f"tlmed-{task}"
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise TlMedError(f"no MLflow experiment '{name}': run the pipeline first")
    out = []
    for site in sites:
        runs = client.search_runs([experiment.experiment_id], f"tags.site = '{site}'", max_results=5000,
                                  order_by=["attributes.start_time DESC"])
        parents = [r for r in runs if r.info.run_name == f"adapt-{site}" and r.info.status == "FINISHED"]
        if not parents:
            continue
        children: dict[str, list] = {}
        for r in runs:
            children.setdefault(r.data.tags.get("mlflow.parentRunId", ""), []).append(r)
        model = registered_model_name(task, site)
        versions, aliases = _versions(client, model)
        candidates = [_candidate(p, children.get(p.info.run_id, []), versions, aliases) for p in parents]
        out.append(SiteComparison(site, candidates, _alias_line(client, model, "champion"),
                                  _alias_line(client, model, "challenger")))
    return out


def to_markdown(sites: list[SiteComparison]) -> str:
    lines = ["# Per-site comparison", "",
             "Every candidate of each site, newest first, beside the baselines trained and tested with it.", ""]
    for s in sites:
        lines += [f"## {s.site}", "", f"- champion: {s.champion}", f"- challenger: {s.challenger}", "",
                  "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(c.row()) + " |" for c in s.candidates]
        lines.append("")
    return "\n".join(lines)


def to_html(sites: list[SiteComparison]) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>tl_med comparison</title>",
             "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
             "td,th{border:1px solid #999;padding:3px 8px}td.n{text-align:right}</style></head><body>"
             "<h1>Per-site comparison</h1><p>Every candidate of each site, newest first, beside the baselines "
             "trained and tested with it.</p>"]
    numeric = {"labels", "source-only Dice", "from-scratch Dice", "adapted Dice", "adapted HD95 mm", "forgetting"}
    for s in sites:
        parts.append(f"<h2>{e(s.site)}</h2><p>champion: {e(s.champion)}<br>challenger: {e(s.challenger)}</p>"
                     "<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in COLUMNS) + "</tr>")
        parts += ["<tr>" + "".join(f"<td{' class=n' if col in numeric else ''}>{e(v)}</td>"
                                   for col, v in zip(COLUMNS, c.row())) + "</tr>" for c in s.candidates]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def report_document(sites: list[SiteComparison], task: str) -> dict[str, Any]:
    """The ``tl-med report --json`` document (schema ``tl_med.report/1``)."""
    def candidate(c: Candidate, model: str) -> dict[str, Any]:
        d = asdict(c)
        d["aliases"] = list(c.aliases)
        d["negative_transfer"] = {"flag": bool(c.negative_transfer), "reason": c.negative_transfer}
        d["dice"] = {"source_only": d.pop("source_only_dice"), "from_scratch": d.pop("scratch_dice"),
                     "adapted": d.pop("adapted_dice")}
        d["hd95_mm"] = {"adapted": d.pop("adapted_hd95")}
        d["model"] = {"name": model, "version": d.pop("version")}
        return d

    return {"schema": REPORT_SCHEMA, "task": task,
            "sites": [{"site": s.site, "model": registered_model_name(task, s.site), "champion": s.champion,
                       "challenger": s.challenger,
                       "candidates": [candidate(c, registered_model_name(task, s.site)) for c in s.candidates]}
                      for s in sites]}
