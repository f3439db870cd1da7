"""The champion gate and the comparison: approve, reject, models, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from tl_med.cli.common import (
    REPO_SITES,
    JsonOpt,
    SitesOpt,
    WorkspaceOpt,
    app,
    console,
)
from tl_med.cli.output import emit_json, print_table
from tl_med.errors import TlMedError
from tl_med.workspace import resolve_workspace


def _registry_client(workspace: Path | None, sites: Path):
    from tl_med.mlflow_store import mlflow_client
    from tl_med.sites import load_sites

    ws = resolve_workspace(workspace)
    if ws.uses_embedded_mlflow and not ws.mlflow_db.exists():
        raise TlMedError(f"no MLflow store at {ws.mlflow_db}: run the pipeline first")
    return mlflow_client(ws.tracking_uri), load_sites(sites, ws.root)


@app.command()
def approve(site: Annotated[str, typer.Option("--site", help="Target site.")],
            version: Annotated[str, typer.Option("--version", help="Registered model version to promote.")],
            approver: Annotated[str, typer.Option("--approver", help="Your name (recorded).")] = "",
            reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "",
            override: Annotated[str, typer.Option("--override", help="Approve despite the objections; "
                                                  "the text is recorded as the override's reason.")] = "",
            workspace: WorkspaceOpt = None, sites: SitesOpt = REPO_SITES) -> None:
    """Move the site model's ``champion`` alias to a version, after the approval checks."""
    from tl_med.approval import approve as do_approve

    client, registry = _registry_client(workspace, sites)
    registry.get(site)
    d = do_approve(client, registry.task, site, version, approver=approver, reason=reason, override=override)
    was = f"v{d.previous_champion}" if d.previous_champion else "none"
    console.print(f"{d.model} v{d.version} is now champion (was {was}); approved by {d.approver} at {d.at} "
                  f"({d.evidence()})" + (f"; OVERRIDE: {d.override}" if d.override else ""), markup=False)


@app.command()
def reject(site: Annotated[str, typer.Option("--site", help="Target site.")],
           version: Annotated[str, typer.Option("--version", help="Registered model version.")],
           approver: Annotated[str, typer.Option("--approver", help="Your name (recorded).")] = "",
           reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "",
           workspace: WorkspaceOpt = None, sites: SitesOpt = REPO_SITES) -> None:
    """Record a rejection of a version (no alias moves)."""
    from tl_med.approval import reject as do_reject

    client, registry = _registry_client(workspace, sites)
    registry.get(site)
    d = do_reject(client, registry.task, site, version, approver=approver, reason=reason)
    console.print(f"{d.model} v{d.version} rejected by {d.approver} at {d.at} ({d.evidence()})", markup=False)


@app.command()
def models(site: Annotated[Optional[list[str]], typer.Option("--site", help="Site(s); default: all targets "
                                                                              "and the source.")] = None,
           history: Annotated[bool, typer.Option("--history", help="Show each alias move instead (who, when, "
                                                 "alias, version, previous, reason/override), from tl_med's decision "
                                                 "tags and, on a tlmed-auth server, its audit log.")] = False,
           workspace: WorkspaceOpt = None, sites: SitesOpt = REPO_SITES, as_json: JsonOpt = False) -> None:
    """List each site's registered versions with metrics, aliases and decisions."""
    from tl_med.approval import list_versions

    client, registry = _registry_client(workspace, sites)
    names = [registry.get(s).name for s in site] if site else registry.names
    if history:
        _print_history(client, resolve_workspace(workspace).tracking_uri, registry.task, names, as_json)
        return
    versions = list_versions(client, registry.task, names)
    if as_json:
        emit_json({"schema": "tl_med.models/1", "task": registry.task,
                   "versions": [{"site": v.site, "model": v.model, "version": v.version, "aliases": list(v.aliases),
                                 "tags": v.tags} for v in versions]})
        return
    table = Table(title=f"Registered site models (task {registry.task})")
    for h in ("model", "version", "aliases", "test Dice", "estimated", "source-only", "from-scratch", "forgetting",
              "negative transfer", "decision", "by", "reason"):
        table.add_column(h, no_wrap=h not in ("reason",), overflow="fold")
    for row in versions:
        t = row.tags
        table.add_row(row.model, row.version, ", ".join(row.aliases), t.get("test_dice", ""),
                      t.get("estimated_dice", ""),
                      t.get("source_only_dice", ""), t.get("scratch_dice", ""), t.get("forgetting", ""),
                      t.get("negative_transfer", ""), t.get("decision", "") + (" (override)" if t.get(
                          "decision_override") else ""), t.get("decided_by", ""), t.get("decision_reason", ""))
    print_table(table)


def _print_history(client, tracking_uri: str, task: str, names: list[str], as_json: bool) -> None:
    """``tl-med models --history``: one table (or JSON document) of every site's alias moves."""
    from dataclasses import asdict

    from mlflow.exceptions import MlflowException

    from tl_med.history import alias_history
    from tl_med.tracking import registered_model_name

    rows = []
    for site_name in names:
        model = registered_model_name(task, site_name)
        try:
            rows += [(site_name, model, c) for c in alias_history(client, tracking_uri, model)]
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" not in str(exc) and "not found" not in str(exc).lower():
                raise TlMedError(f"could not read {model}: {str(exc).splitlines()[0][:200]}") from None
    if as_json:
        emit_json({"schema": "tl_med.alias_history/1", "task": task,
                   "changes": [{"site": s, "model": m, **asdict(c)} for s, m, c in rows]})
        return
    table = Table(title=f"Alias history (task {task})")
    for h in ("when (UTC)", "model", "alias", "action", "version", "previous", "who", "account", "reason",
              "override", "source"):
        table.add_column(h, no_wrap=h not in ("reason", "override"), overflow="fold")
    for _, model, c in rows:
        table.add_row(c.at, model, c.alias, c.action, c.version, c.previous, c.who, c.account, c.reason, c.override,
                      c.source)
    print_table(table)


@app.command()
def report(workspace: WorkspaceOpt = None, sites: SitesOpt = REPO_SITES, as_json: JsonOpt = False) -> None:
    """Write the per-site comparison of every candidate version (Markdown and HTML) and log it to
    each site's latest parent run."""
    from tl_med.report import comparison, report_document, to_html, to_markdown

    client, registry = _registry_client(workspace, sites)
    ws = resolve_workspace(workspace)
    found = comparison(client, registry.task, [t.name for t in registry.targets])
    if not found:
        raise TlMedError("no adapt runs to compare yet: run the pipeline first")
    md, page = to_markdown(found), to_html(found)
    out = ws.reports / "comparison"
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(md)
    (out / "comparison.html").write_text(page)
    for site in found:
        client.log_text(site.parent_run_id, md, "report/comparison.md")
        client.log_text(site.parent_run_id, page, "report/comparison.html")
    if as_json:
        emit_json({**report_document(found, registry.task), "files": {"markdown": str(out / "comparison.md"),
                                                                       "html": str(out / "comparison.html")}})
        return
    console.print(md, markup=False)
    console.print(f"written: {out / 'comparison.md'} and {out / 'comparison.html'}; logged to "
                  f"{len(found)} parent run(s)", markup=False)
