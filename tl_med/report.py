"""The per-site comparison report: strategies and baselines × metrics, champion vs challenger.

Read from MLflow alone (the latest ``adapt-<site>`` parent run of each site and its child runs,
plus the registry's aliases), written as Markdown and HTML, logged to each site's parent run.

Example:
    >>> # sites = comparison(MlflowClient(uri), "liver", ["east", "west"])
    >>> # print(to_markdown(sites))
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tl_med.errors import TlMedError
from tl_med.tracking import registered_model_name

__all__ = ["SiteComparison", "comparison", "to_markdown", "to_html", "COLUMNS"]

COLUMNS = ("run", "strategy", "test Dice", "test HD95 (mm)", "forgetting", "negative transfer")


@dataclass(frozen=True)
class SiteComparison:
    site: str
    parent_run_id: str
    rows: list[tuple[str, ...]]
    champion: str = ""
    challenger: str = ""
    notes: list[str] = field(default_factory=list)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    try:
        versions = {a: str(v) for a, v in (client.get_registered_model(name).aliases or {}).items()}
    except MlflowException:
        return {}
    out = {}
    for alias, version in versions.items():
        tags = client.get_model_version(name, version).tags
        out[alias] = f"v{version}: test Dice {tags.get('test_dice', '?')}, strategy {tags.get('strategy', '?')}"
    return out


def comparison(client: MlflowClient, task: str, sites: list[str],
               experiment_name: str | None = None) -> list[SiteComparison]:
    """One comparison per site that has an ``adapt-<site>`` run, from its latest such run (in the
    task's experiment ``tlmed-<task>`` unless ``experiment_name`` says otherwise)."""
    name = experiment_name or f"tlmed-{task}"
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise TlMedError(f"no MLflow experiment '{name}': run the pipeline first")
    out = []
    for site in sites:
        parents = client.search_runs([experiment.experiment_id], f"attributes.run_name = 'adapt-{site}'",
                                     order_by=["attributes.start_time DESC"], max_results=1)
        if not parents:
            continue
        parent = parents[0]
        children = client.search_runs([experiment.experiment_id],
                                      f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                                      order_by=["attributes.start_time ASC"])
        rows = []
        for run in children:
            m, t = run.data.metrics, run.data.tags
            rows.append((run.info.run_name, t.get("strategy", ""), _fmt(m.get("test_dice")),
                         _fmt(m.get("test_hd95"), 1), _fmt(m.get("forgetting")),
                         {"true": "YES", "false": "no"}.get(t.get("negative_transfer", ""), "")))
        aliases = _aliases(client, registered_model_name(task, site))
        out.append(SiteComparison(site, parent.info.run_id, rows, aliases.get("champion", "none"),
                                  aliases.get("challenger", "none")))
    return out


def to_markdown(sites: list[SiteComparison]) -> str:
    lines = ["# Per-site comparison", ""]
    for s in sites:
        lines += [f"## {s.site}", "", f"- champion: {s.champion}", f"- challenger: {s.challenger}",
                  f"- parent run: `{s.parent_run_id}`", "",
                  "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(r) + " |" for r in s.rows]
        lines.append("")
    return "\n".join(lines)


def to_html(sites: list[SiteComparison]) -> str:
    e = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>tl_med comparison</title>",
             "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
             "td,th{border:1px solid #999;padding:3px 8px}</style></head><body><h1>Per-site comparison</h1>"]
    for s in sites:
        parts.append(f"<h2>{e(s.site)}</h2><p>champion: {e(s.champion)}<br>challenger: {e(s.challenger)}<br>"
                     f"parent run: <code>{e(s.parent_run_id)}</code></p><table><tr>"
                     + "".join(f"<th>{e(c)}</th>" for c in COLUMNS) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>" for row in s.rows]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
