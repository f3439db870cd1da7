"""``tl-med``: the command line.

Commands: ``demo`` (synthetic sites + the whole pipeline), ``run`` (the pipeline on configured
sites), ``adapt`` (one site from a pretrained source, with a strategy and steps), ``retrain``
(one site through the ``site-retrain`` deployment, or directly), ``serve`` (the deployment's
schedules, new-data trigger and inbox watcher against a Prefect server), ``watch`` (the inbox
watcher alone), ``approve`` /
``reject`` / ``models`` (the champion gate), ``ingest`` (one site), ``synth`` (write synthetic
sites), ``ui`` (MLflow UI on the workspace).
Problems a user can fix print one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from pydantic import ValidationError

from tl_med.config import PipelineConfig
from tl_med.errors import TlMedError
from tl_med.workspace import Workspace, resolve_workspace

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Per-site transfer learning for medical-image segmentation.")
console = Console(width=max(shutil.get_terminal_size((140, 24)).columns, 140))

REPO_MANIFESTS = Path(__file__).resolve().parent.parent / "data_manifests"
REPO_SITES = REPO_MANIFESTS / "sites.yaml"

WorkspaceOpt = Annotated[Optional[Path], typer.Option("--workspace", "-w", help="Workspace root "
                         "(default: $TL_MED_HOME or ./tlmed-workspace).")]
SitesOpt = Annotated[Path, typer.Option("--sites", help="Site registry (sites.yaml).")]
ProfileOpt = Annotated[str, typer.Option("--profile", help="Config preset: demo or tiny.")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="Pipeline config YAML "
                      "(overrides --profile).")]


def _config(profile: str, config: Path | None, seed: int | None) -> PipelineConfig:
    cfg = PipelineConfig.from_yaml(config) if config else PipelineConfig.profile(profile)
    return cfg.model_copy(update={"seed": seed}) if seed is not None else cfg


def _steps(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(s.strip() for s in text.split(",") if s.strip())


def _with_adapt(cfg: PipelineConfig, *, norm: str | None = None, **adapt: object) -> PipelineConfig:
    """``cfg`` with adapt overrides (``None`` keeps a value); a bad combination is one error line."""
    try:
        changes = {k: v for k, v in adapt.items() if v is not None}
        if "n_labelled" in adapt and adapt["n_labelled"] is None:
            changes["n_labelled"] = None
        network = cfg.network.model_copy(update={"norm": norm}) if norm else cfg.network
        return PipelineConfig.model_validate({**cfg.model_dump(), "adapt": {**cfg.adapt.model_dump(), **changes},
                                              "network": network.model_dump()})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise TlMedError(f"{'.'.join(map(str, err['loc'])) or 'adapt'}: {err['msg']}") from None


def _print_results(outcome, ws: Workspace, seconds: float) -> None:
    from tl_med.results import HEADERS, result_rows, source_line

    console.print("\n" + source_line(outcome))
    table = Table(title="Per-site adaptation (test split of each target site)")
    for h in HEADERS:
        table.add_column(h, justify="right" if "Dice" in h or h in ("gain", "forgetting") else "left",
                         no_wrap=h in ("strategy", "model version", "MLflow run id"))
    for row in result_rows(outcome.sites):
        table.add_row(*row)
    console.print(table)
    console.print("forgetting: the source site's test Dice lost by adapting; negative transfer: adapted Dice "
                  "below source-only or from-scratch by more than adapt.negative_transfer_margin")
    console.print(f"Finished in {seconds:.0f} s. Workspace: {ws.root}")
    console.print("\nExplore the runs:")
    if ws.uses_embedded_mlflow:
        console.print(f"  MLflow UI:  tl-med ui --workspace {ws.root}   (then open http://127.0.0.1:5000)")
        console.print(f"          or  mlflow ui --backend-store-uri {ws.tracking_uri} --host 127.0.0.1 --port 5000")
    else:
        console.print(f"  MLflow UI:  {ws.tracking_uri}")
    if not os.environ.get("PREFECT_API_URL"):
        console.print(f"  Prefect UI: PREFECT_HOME={ws.prefect_home} prefect server start   "
                      "(then open http://127.0.0.1:4200)")


def _run_pipeline(ws: Workspace, sites_file: Path, cfg: PipelineConfig, targets: list[str] | None,
                  trigger: str, pretrained: str | None = None) -> None:
    from tl_med.sites import load_sites

    sites = load_sites(sites_file, ws.root)  # validate names before any server or run starts
    chosen = [sites.get(t) for t in targets] if targets else sites.targets
    for s in chosen:
        if s.role == "source":
            known = ", ".join(t.name for t in sites.targets)
            raise TlMedError(f"site '{s.name}' is the source site; pick a target site ({known})")
    for s in [sites.source, *chosen]:
        if s.dicom_dir is not None and (not s.dicom_dir.is_dir() or not any(s.dicom_dir.rglob("*"))):
            raise TlMedError(f"site '{s.name}': DICOM folder {s.dicom_dir} is missing or empty")
    ws.activate()
    from flows.pipeline import site_adaptation_pipeline  # Prefect is imported after PREFECT_HOME is set

    start = time.perf_counter()
    state = site_adaptation_pipeline(workspace=str(ws.root), sites_file=str(sites_file.resolve()),
                                     config=cfg.model_dump(mode="json"), targets=targets, trigger=trigger,
                                     pretrained=pretrained, return_state=True)
    outcome = state.result()  # raises the flow's error if it failed
    _print_results(outcome, ws, time.perf_counter() - start)
    if state.message:
        console.print(f"Flow run: {state.message} (see `tl-med ingest --site <name>` or the ingest "
                      f"artifacts in the Prefect UI for why)", markup=False)


@app.command()
def demo(workspace: WorkspaceOpt = None, seed: int = typer.Option(0, help="Data and training seed."),
         profile: ProfileOpt = "demo", config: ConfigOpt = None,
         sites: Annotated[Optional[Path], typer.Option("--sites", help="Site registry (default: "
                          "data_manifests/sites.yaml, or sites-tiny.yaml with --profile tiny).")] = None) -> None:
    """Generate three synthetic hospital sites (DICOM) and run the whole pipeline on them."""
    from tl_med.data.synthetic import DEMO_SITES, TINY_SITES, generate_sites

    ws = resolve_workspace(workspace).ensure()
    marker = ws.incoming / f".generated-seed{seed}-{profile}"
    if not marker.exists():
        console.print(f"Generating synthetic sites into {ws.incoming} ...")
        for spec in DEMO_SITES:
            shutil.rmtree(ws.incoming / spec.name, ignore_errors=True)
        specs = TINY_SITES if profile == "tiny" else DEMO_SITES
        summary = generate_sites(ws.incoming, specs, seed=seed, downsample=4 if profile == "tiny" else 1)
        for name, counts in summary.items():
            console.print(f"  {name}: {counts['studies']} studies, {counts['files']} DICOM files")
        for old in ws.incoming.glob(".generated-*"):
            old.unlink()
        marker.touch()
    registry = sites or (REPO_MANIFESTS / ("sites-tiny.yaml" if profile == "tiny" else "sites.yaml"))
    from tl_med.sites import load_sites

    for site in load_sites(registry, ws.root).sites:  # ready for `tl-med serve` to watch
        if site.inbox is not None:
            site.inbox.mkdir(parents=True, exist_ok=True)
    _run_pipeline(ws, registry, _config(profile, config, seed), None, "manual")


@app.command()
def run(site: Annotated[Optional[list[str]], typer.Option("--site", help="Target site(s); default: all.")] = None,
        workspace: WorkspaceOpt = None, sites: SitesOpt = REPO_SITES, profile: ProfileOpt = "demo",
        config: ConfigOpt = None, seed: Optional[int] = None,
        trigger: str = typer.Option("manual", help="Recorded as the runs' trigger tag.")) -> None:
    """Run the pipeline (ingest, preprocess, pretrain, adapt, register) on the configured sites."""
    _run_pipeline(resolve_workspace(workspace).ensure(), sites, _config(profile, config, seed), site, trigger)


@app.command()
def adapt(site: Annotated[str, typer.Option("--site", help="Target site to adapt.")],
          pretrained: Annotated[Optional[str], typer.Option(
              "--pretrained", help="Where to start: a MONAI bundle folder or .zip, a checkpoint file, or "
              "models:/<name>@<alias> (default: models:/tlmed-<task>-<source site>@challenger).")] = None,
          strategy: Annotated[str, typer.Option(help="finetune, feature_extraction or progressive.")] = "finetune",
          steps: Annotated[str, typer.Option(help="Comma-separated domain-adaptation steps: harmonise, adabn, "
                                                   "coral, self_training, tent (adabn/tent need a batch-norm "
                                                   "network: --norm batch).")] = "",
          labels: Annotated[Optional[int], typer.Option("--labels", help="Labelled target cases to use "
                                                        "(default: all in the training split; 0: none).")] = None,
          norm: Annotated[Optional[str], typer.Option(help="Override network.norm (instance or batch).")] = None,
          workspace: WorkspaceOpt = None, sites: SitesOpt = REPO_SITES, profile: ProfileOpt = "demo",
          config: ConfigOpt = None, seed: Optional[int] = None,
          trigger: str = typer.Option("manual", help="Recorded as the runs' trigger tag.")) -> None:
    """Adapt one site from a pretrained source with a strategy and steps; print and log the
    comparison with the source-only and from-scratch baselines (runs through the Prefect flow)."""
    from tl_med.sites import load_sites

    ws = resolve_workspace(workspace).ensure()
    cfg = _with_adapt(_config(profile, config, seed), strategy=strategy, steps=_steps(steps), n_labelled=labels,
                      norm=norm)
    registry = load_sites(sites, ws.root)
    start = pretrained or f"models:/tlmed-{cfg.task}-{registry.source.name}@challenger"
    _run_pipeline(ws, sites, cfg, [site], trigger, pretrained=start)


def _prefect_server() -> str:
    """The configured Prefect API URL after a health check; '' when none is configured."""
    import httpx

    url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if not url:
        return ""
    try:
        httpx.get(f"{url}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise TlMedError(f"Prefect server at {url} is not reachable ({type(exc).__name__}: {exc}); "
                         "start it (prefect server start) or unset PREFECT_API_URL") from None
    return url


StrategyOpt = Annotated[Optional[str], typer.Option(help="finetune, feature_extraction or progressive "
                                                         "(default: the site's retrain.strategy, else the config's).")]


@app.command()
def retrain(site: Annotated[str, typer.Option("--site", help="Target site to retrain.")],
            pretrained: Annotated[Optional[str], typer.Option(help="Start from: a MONAI bundle, checkpoint or "
                                                              "models:/ URI (default: the site's retrain.pretrained, "
                                                              "else models:/tlmed-<task>-<source>@challenger).")] = None,
            strategy: StrategyOpt = None,
            steps: Annotated[Optional[str], typer.Option(help="Comma-separated domain-adaptation steps.")] = None,
            labels: Annotated[Optional[int], typer.Option("--labels", help="Labelled-case budget.")] = None,
            wait: Annotated[bool, typer.Option(help="Wait for a deployment run to finish.")] = True,
            workspace: WorkspaceOpt = None, sites: SitesOpt = REPO_SITES, profile: ProfileOpt = "demo",
            config: ConfigOpt = None) -> None:
    """Retrain one site: through the ``site-retrain`` deployment when PREFECT_API_URL names a
    server (``tl-med serve`` must be running), else by running the flow here."""
    from tl_med.sites import load_sites

    ws = resolve_workspace(workspace)
    registry = load_sites(sites, ws.root)
    target = registry.get(site)
    if target.role == "source":
        raise TlMedError(f"site '{target.name}' is the source site; retrain a target site "
                         f"({', '.join(t.name for t in registry.targets)})")
    base = _config(profile, config, None)
    _with_adapt(base, strategy=strategy, steps=_steps(steps), n_labelled=labels)  # validate before any run
    params = {k: v for k, v in {"site": target.name, "pretrained": pretrained, "strategy": strategy,
                                "steps": list(_steps(steps)) if steps is not None else None,
                                "n_labelled": labels, "trigger": "manual"}.items() if v is not None}
    server = _prefect_server()
    if server:
        _retrain_on_server(server, params, wait)
        return
    if target.dicom_dir is not None and not target.dicom_dir.is_dir():
        raise TlMedError(f"site '{target.name}': DICOM folder {target.dicom_dir} does not exist")
    ws.ensure().activate()
    from flows.retrain import site_retrain

    start = time.perf_counter()
    state = site_retrain(**params, profile=profile, config_file=str(config.resolve()) if config else None,
                         workspace=str(ws.root), sites_file=str(sites.resolve()), return_state=True)
    result = state.result()
    from tl_med.results import PipelineResult

    _print_results(PipelineResult(source=None, sites=[result], pretrained=pretrained or ""), ws,
                   time.perf_counter() - start)
    if state.message:
        console.print(f"Flow run: {state.message}", markup=False)


def _retrain_on_server(server: str, params: dict, wait: bool) -> None:
    from flows.deploy import FULL_NAME, trigger_retrain

    run = trigger_retrain(params, wait=wait, server=server)
    state = run.state
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
    from flows.deploy import FULL_NAME, build_deployment, serve_deployment
    from flows.tasks import ensure_gpu_limit
    from flows.watch import watch

    slots = ensure_gpu_limit(gpu_slots)
    deployment = build_deployment(registry, workspace=str(ws.root), sites_file=str(sites_file), profile=profile,
                                  config_file=str(config.resolve()) if config else None)
    stop = threading.Event()
    watchers = _watchers(registry, ws, quiet_seconds) if watch_inboxes else []
    watched = [s.name for s in registry.sites if s.inbox is not None or s.pacs is not None] if watchers else []
    if watchers:
        threading.Thread(target=watch, args=(watchers, stop), kwargs={"interval": poll_seconds},
                         name="site-watcher", daemon=True).start()
    scheduled = [f"{s.name} ({s.schedule.cron} {s.schedule.timezone})" for s in registry.targets if s.schedule]
    console.print(f"serving {FULL_NAME} on {server}; schedules: {', '.join(scheduled) or 'none'}; "
                  f"inboxes/PACS watched: {', '.join(watched) or 'none'}; gpu slots: {slots}", markup=False)
    try:
        serve_deployment(deployment)
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


def _registry_client(workspace: Path | None, sites: Path):
    from mlflow import MlflowClient

    from tl_med.sites import load_sites

    ws = resolve_workspace(workspace)
    if ws.uses_embedded_mlflow and not ws.mlflow_db.exists():
        raise TlMedError(f"no MLflow store at {ws.mlflow_db}: run the pipeline first")
    return MlflowClient(ws.tracking_uri), load_sites(sites, ws.root)


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
    console.print(f"{d.model} v{d.version} is now champion (was {('v' + d.previous_champion) if d.previous_champion else 'none'}); "
                  f"approved by {d.approver} at {d.at}" + (f"; OVERRIDE: {d.override}" if d.override else ""),
                  markup=False)


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
    console.print(f"{d.model} v{d.version} rejected by {d.approver} at {d.at}", markup=False)


@app.command()
def models(site: Annotated[Optional[list[str]], typer.Option("--site", help="Site(s); default: all targets "
                                                                              "and the source.")] = None,
           workspace: WorkspaceOpt = None, sites: SitesOpt = REPO_SITES) -> None:
    """List each site's registered versions with metrics, aliases and decisions."""
    from tl_med.approval import list_versions

    client, registry = _registry_client(workspace, sites)
    names = [registry.get(s).name for s in site] if site else registry.names
    table = Table(title=f"Registered site models (task {registry.task})")
    for h in ("model", "version", "aliases", "test Dice", "source-only", "from-scratch", "forgetting",
              "negative transfer", "decision", "by", "reason"):
        table.add_column(h, no_wrap=h in ("model", "aliases"))
    for row in list_versions(client, registry.task, names):
        t = row.tags
        table.add_row(row.model, row.version, ", ".join(row.aliases), t.get("test_dice", ""),
                      t.get("source_only_dice", ""), t.get("scratch_dice", ""), t.get("forgetting", ""),
                      t.get("negative_transfer", ""), t.get("decision", "") + (" (override)" if t.get(
                          "decision_override") else ""), t.get("decided_by", ""), t.get("decision_reason", ""))
    console.print(table)


@app.command()
def report(workspace: WorkspaceOpt = None, sites: SitesOpt = REPO_SITES) -> None:
    """Write the per-site comparison (Markdown and HTML) and log it to each site's latest parent run."""
    from tl_med.report import comparison, to_html, to_markdown

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
    console.print(md, markup=False)
    console.print(f"written: {out / 'comparison.md'} and {out / 'comparison.html'}; logged to "
                  f"{len(found)} parent run(s)", markup=False)


@app.command()
def ingest(site: Annotated[str, typer.Option("--site", help="Site to ingest.")],
           workspace: WorkspaceOpt = None, sites: SitesOpt = REPO_SITES) -> None:
    """Ingest one site's DICOM into de-identified NIfTI plus its manifest and report (pulling its new
    studies from its PACS first, when it has one)."""
    from tl_med.ingest.site import ingest_site
    from tl_med.sites import load_sites

    ws = resolve_workspace(workspace).ensure()
    registry = load_sites(sites, ws.root)
    config = registry.get(site)
    if config.pacs is not None:
        from tl_med.pacs.pull import pull_site

        pulled = pull_site(config, ws)
        console.print(pulled.line(), markup=False)
        for line in pulled.failed:
            console.print(f"  not pulled (the next ingest resumes it): {line}", markup=False)
    result = ingest_site(config, ws, task=registry.task)
    s = result.report.summary()
    console.print(f"{site}: {s['inputs']} inputs = {s['converted']} converted + {s['skipped']} skipped + "
                  f"{s['quarantined']} quarantined; {result.n_labelled} labelled cases; "
                  f"{s['volumes_converted_now']} volumes converted now, {s['volumes_unchanged']} unchanged")
    for q in result.report.quarantined:  # real paths go to the terminal only, never to a file
        console.print(f"  quarantined {q.file} [{result.report.ref(q.file)}]: {q.reason}", markup=False)
    console.print(f"manifest: {result.manifest_path}\nreport:   {result.report_path}")


@app.command()
def synth(out: Annotated[Path, typer.Option("--out", help="Folder to write sites into.")],
          seed: int = 0, downsample: int = typer.Option(1, min=1, help="Coarsen every grid by this factor.")) -> None:
    """Write the synthetic demo sites (DICOM + NIfTI labels) into a folder."""
    from tl_med.data.synthetic import DEMO_SITES, generate_sites

    for name, counts in generate_sites(out, DEMO_SITES, seed=seed, downsample=downsample).items():
        console.print(f"{name}: {counts['studies']} studies, {counts['files']} files")


@app.command()
def ui(workspace: WorkspaceOpt = None, port: int = 5000) -> None:
    """Start the MLflow UI on the workspace's store (loopback only)."""
    ws = resolve_workspace(workspace)
    if ws.uses_embedded_mlflow and not ws.mlflow_db.exists():
        raise TlMedError(f"no MLflow store at {ws.mlflow_db}: run `tl-med demo` first")
    console.print(f"MLflow UI on http://127.0.0.1:{port} (store {ws.tracking_uri}); Ctrl-C to stop")
    subprocess.run([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", ws.tracking_uri,
                    "--host", "127.0.0.1", "--port", str(port)], check=False)


def main() -> None:
    """Entry point: user-fixable errors become one line on stderr and exit status 2."""
    try:
        app(standalone_mode=False)
    except TlMedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
