"""Unattended retraining: retrain (through the deployment or directly), serve, watch."""

from __future__ import annotations

import os
import time
from typing import Annotated, Optional

import typer

from tl_med.cli.common import (
    REPO_SITES,
    ConfigOpt,
    JsonOpt,
    ProfileOpt,
    SitesOpt,
    VerboseOpt,
    WorkspaceOpt,
    app,
    console,
    load_config,
    parse_steps,
    report_outcome,
    with_adapt,
)
from tl_med.catalogue import STEPS, STRATEGIES
from tl_med.cli.orchestrator import check_server, prepare_prefect
from tl_med.cli.output import emit_json, progress_view
from tl_med.config import PipelineConfig
from tl_med.errors import TlMedError
from tl_med.workspace import Workspace, resolve_workspace


def _prefect_server() -> str:
    """The configured Prefect API URL after a health check; '' when none is configured."""
    url = os.environ.get("PREFECT_API_URL", "")
    return check_server(url) if url else ""


StrategyOpt = Annotated[Optional[str], typer.Option(help=f"{', '.join(STRATEGIES)} (default: the site's "
                                                         "retrain.strategy, else the config's).")]


@app.command()
def retrain(site: Annotated[str, typer.Option("--site", help="Target site to retrain.")],
            pretrained: Annotated[Optional[str], typer.Option(help="Start from: a MONAI bundle, checkpoint or "
                                                              "models:/ URI (default: the site's retrain.pretrained, "
                                                              "else the source model's approved champion, resolved "
                                                              "when the run starts; its challenger only while it "
                                                              "never had a champion).")] = None,
            strategy: StrategyOpt = None,
            steps: Annotated[Optional[str], typer.Option(help="Comma-separated domain-adaptation steps: "
                                                         f"{', '.join(STEPS)}.")] = None,
            labels: Annotated[Optional[int], typer.Option("--labels", help="Labelled-case budget.")] = None,
            wait: Annotated[bool, typer.Option(help="Wait for a deployment run to finish.")] = True,
            workspace: WorkspaceOpt = None, sites: SitesOpt = REPO_SITES, profile: ProfileOpt = "demo",
            config: ConfigOpt = None, as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Retrain one site: through the ``site-retrain`` deployment when PREFECT_API_URL names a
    server (``tl-med serve`` must be running), else by running the flow here."""
    from tl_med.sites import load_sites

    ws = resolve_workspace(workspace)
    registry = load_sites(sites, ws.root)
    target = registry.get(site)
    if target.role == "source":
        raise TlMedError(f"site '{target.name}' is the source site; retrain a target site "
                         f"({', '.join(t.name for t in registry.targets)})")
    base = load_config(profile, config, None)
    with_adapt(base, strategy=strategy, steps=parse_steps(steps), n_labelled=labels)  # validate before any run
    params = {k: v for k, v in {"site": target.name, "pretrained": pretrained, "strategy": strategy,
                                "steps": list(parse_steps(steps)) if steps is not None else None,
                                "n_labelled": labels, "trigger": "manual"}.items() if v is not None}
    server = _prefect_server()
    if server:
        _retrain_on_server(server, params, wait, as_json)
        return
    if target.dicom_dir is not None and not target.dicom_dir.is_dir():
        raise TlMedError(f"site '{target.name}': DICOM folder {target.dicom_dir} does not exist")
    prepare_prefect(ws.ensure(), verbose=verbose)
    from flows.retrain import site_retrain

    start = time.perf_counter()
    with progress_view():
        state = site_retrain(**params, profile=profile, config_file=str(config.resolve()) if config else None,
                             workspace=str(ws.root), sites_file=str(sites.resolve()), return_state=True)
        result = state.result()
    from tl_med.results import PipelineResult

    started, fallback = _started_from(ws, result.parent_run_id, pretrained)
    outcome = PipelineResult(source=None, sites=[result], pretrained=started)
    report_outcome(outcome, state, ws, time.perf_counter() - start, command="retrain", as_json=as_json)
    if fallback and not as_json:
        console.print(f"Note: {fallback}", markup=False)


def _started_from(ws: Workspace, parent_run_id: str, pretrained: str | None) -> tuple[str, str]:
    """The source the run started from (as resolved by the flow) and its fallback line, from the
    tags of the site's parent MLflow run."""
    from tl_med.mlflow_store import mlflow_client

    tags = mlflow_client(ws.tracking_uri).get_run(parent_run_id).data.tags
    return tags.get("pretrained_source") or pretrained or "", tags.get("pretrained_fallback", "")


def _retrain_on_server(server: str, params: dict, wait: bool, as_json: bool) -> None:
    from flows.deploy import FULL_NAME, trigger_retrain

    run = trigger_retrain(params, wait=wait, server=server)
    state = run.state
    if as_json:
        emit_json({"schema": "tl_med.retrain-request/1", "command": "retrain", "deployment": FULL_NAME,
                   "prefect_flow_run": {"id": str(run.id), "name": run.name, "state": state.type.value if state else
                                        "SCHEDULED", "message": (state.message if state else "") or ""},
                   "parameters": params, "waited": wait})
    else:
        console.print(f"flow run {run.name} ({run.id}) of {FULL_NAME}: {state.name if state else 'scheduled'}"
                      + (f" - {state.message}" if state and state.message else ""), markup=False)
    if wait and (state is None or not state.is_completed()):
        raise typer.Exit(1)


@app.command()
def serve(workspace: WorkspaceOpt = None, sites: SitesOpt = REPO_SITES, profile: ProfileOpt = "demo",
          config: ConfigOpt = None,
          watch_inboxes: Annotated[bool, typer.Option("--watch/--no-watch", help="Watch the sites' inboxes.")] = True,
          quiet_seconds: Annotated[float, typer.Option(help="An inbox delivery is complete after this long "
                                                           "without changes.")] = 10.0,
          poll_seconds: Annotated[float, typer.Option(help="How often the inboxes are looked at.")] = 2.0,
          gpu_slots: Annotated[Optional[int], typer.Option(help="Set the 'gpu' concurrency limit (training "
                                                               "runs at once; default: keep, else 1).")] = None) -> None:
    """Serve the ``site-retrain`` deployment (per-site schedules from sites.yaml, the new-data trigger)
    and the ``site-inference`` deployment (sites with a PACS: new studies segmented by the champion)
    from this process against the Prefect server in PREFECT_API_URL, and watch the site inboxes."""
    import threading

    from tl_med.sites import load_sites

    if not os.environ.get("PREFECT_API_URL"):
        raise TlMedError("tl-med serve needs a Prefect server: start one (prefect server start) and set "
                         "PREFECT_API_URL=http://127.0.0.1:4200/api (schedules and triggers need its services)")
    ws = resolve_workspace(workspace)
    sites_file = sites.resolve()
    registry = load_sites(sites_file, ws.root)  # configuration errors first, then the server
    if watch_inboxes:
        registry.check_inboxes(sites_file)
    if config is not None:
        PipelineConfig.from_yaml(config)
    server = _prefect_server()
    ws.ensure()
    ws.activate()
    from flows.deploy import build_deployments, serve_deployment
    from flows.tasks import ensure_gpu_limit
    from flows.watch import watch

    slots = ensure_gpu_limit(gpu_slots)
    deployments = build_deployments(registry, workspace=str(ws.root), sites_file=str(sites_file), profile=profile,
                                    config_file=str(config.resolve()) if config else None)
    stop = threading.Event()
    watchers = _watchers(registry, ws, quiet_seconds) if watch_inboxes else []
    watched = [s.name for s in registry.sites if s.inbox is not None or s.pacs is not None] if watchers else []
    if watchers:
        threading.Thread(target=watch, args=(watchers, stop), kwargs={"interval": poll_seconds},
                         name="site-watcher", daemon=True).start()
    scheduled = [f"{s.name} ({s.schedule.cron} {s.schedule.timezone})" for s in registry.targets if s.schedule]
    console.print(f"serving {', '.join(f'{d.flow_name}/{d.name}' for d in deployments)} on {server}; "
                  f"schedules: {', '.join(scheduled) or 'none'}; "
                  f"inboxes/PACS watched: {', '.join(watched) or 'none'}; gpu slots: {slots}", markup=False)
    try:
        serve_deployment(*deployments)
    finally:
        stop.set()


def _watchers(registry, ws: Workspace, quiet_seconds: float) -> list:
    """The inbox watcher, plus the PACS change-feed watcher when a site has a PACS."""
    from tl_med.inbox import InboxWatcher
    from tl_med.pacs.changes import PacsWatcher

    watchers: list = [InboxWatcher(registry, quiet_seconds=quiet_seconds)]
    if any(s.pacs is not None for s in registry.sites):
        watchers.append(PacsWatcher(registry, ws))
    return watchers


@app.command()
def watch(workspace: WorkspaceOpt = None, sites: SitesOpt = REPO_SITES,
          quiet_seconds: Annotated[float, typer.Option(help="An inbox delivery is complete after this long "
                                                           "without changes.")] = 10.0,
          poll_seconds: Annotated[float, typer.Option(help="How often the inboxes are looked at.")] = 2.0) -> None:
    """Only watch the site inboxes and PACS change feeds and emit new-data events (when workers,
    not `tl-med serve`, run the deployment: see README "Running on servers")."""
    import threading

    from tl_med.sites import load_sites

    ws = resolve_workspace(workspace)
    registry = load_sites(sites.resolve(), ws.root)
    registry.check_inboxes(sites.resolve())
    if not os.environ.get("PREFECT_API_URL"):
        raise TlMedError("tl-med watch needs a Prefect server: set PREFECT_API_URL")
    _prefect_server()
    ws.ensure().activate()
    from flows.watch import watch as watch_loop

    watched = [s.name for s in registry.sites if s.inbox is not None or s.pacs is not None]
    console.print(f"watching the inboxes/PACS of {', '.join(watched) or 'no site'}; Ctrl-C to stop", markup=False)
    stop = threading.Event()
    try:
        watch_loop(_watchers(registry, ws, quiet_seconds), stop, interval=poll_seconds)
    except KeyboardInterrupt:
        stop.set()
