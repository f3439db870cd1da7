"""Commands that run the pipeline or touch a site's data: demo, run, adapt, ingest, synth, ui."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from tl_med.cli.common import (
    REPO_MANIFESTS,
    REPO_SITES,
    ConfigOpt,
    NetworkOpt,
    JsonOpt,
    ProfileOpt,
    SitesOpt,
    VerboseOpt,
    WorkspaceOpt,
    adapt_steps,
    app,
    console,
    load_config,
    run_pipeline,
    with_adapt,
)
from tl_med.catalogue import STEPS, STRATEGIES, ZERO_LABEL_STEPS, describe, needs_batch_norm
from tl_med.cli.output import err, progress_view
from tl_med.errors import TlMedError
from tl_med.workspace import resolve_workspace


@app.command()
def demo(workspace: WorkspaceOpt = None, seed: int = typer.Option(0, help="Data and training seed."),
         profile: ProfileOpt = "demo", config: ConfigOpt = None, network: NetworkOpt = None,
         sites: Annotated[Optional[Path], typer.Option("--sites", help="Site registry (default: "
                          "data_manifests/sites.yaml, or sites-tiny.yaml with --profile tiny).")] = None,
         as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Generate three synthetic hospital sites (DICOM) and run the whole pipeline on them."""
    from tl_med.data.synthetic import DEMO_SITES, TINY_SITES, generate_sites

    ws = resolve_workspace(workspace).ensure()
    marker = ws.incoming / f".generated-seed{seed}-{profile}"
    if not marker.exists():
        err.print(f"Generating synthetic sites into {ws.incoming} ...", markup=False)
        for spec in DEMO_SITES:
            shutil.rmtree(ws.incoming / spec.name, ignore_errors=True)
        specs = TINY_SITES if profile == "tiny" else DEMO_SITES
        summary = generate_sites(ws.incoming, specs, seed=seed, downsample=4 if profile == "tiny" else 1)
        for name, counts in summary.items():
            err.print(f"  {name}: {counts['studies']} studies, {counts['files']} DICOM files", markup=False)
        for old in ws.incoming.glob(".generated-*"):
            old.unlink()
        marker.touch()
    registry = sites or (REPO_MANIFESTS / ("sites-tiny.yaml" if profile == "tiny" else "sites.yaml"))
    from tl_med.sites import load_sites

    for site in load_sites(registry, ws.root).sites:  # ready for `tl-med serve` to watch
        if site.inbox is not None:
            site.inbox.mkdir(parents=True, exist_ok=True)
    run_pipeline(ws, registry, load_config(profile, config, seed, network), None, "manual", command="demo",
                 as_json=as_json, verbose=verbose)


@app.command()
def run(site: Annotated[Optional[list[str]], typer.Option("--site", help="Target site(s); default: all.")] = None,
        workspace: WorkspaceOpt = None, sites: SitesOpt = REPO_SITES, profile: ProfileOpt = "demo",
        config: ConfigOpt = None, seed: Optional[int] = None, network: NetworkOpt = None,
        trigger: str = typer.Option("manual", help="Recorded as the runs' trigger tag."),
        as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Run the pipeline (ingest, preprocess, pretrain, adapt, register) on the configured sites."""
    run_pipeline(resolve_workspace(workspace).ensure(), sites, load_config(profile, config, seed, network), site,
                 trigger, command="run", as_json=as_json, verbose=verbose)


@app.command()
def adapt(site: Annotated[str, typer.Option("--site", help="Target site to adapt.")],
          pretrained: Annotated[Optional[str], typer.Option(
              "--pretrained", help="Where to start: a MONAI bundle folder or .zip, a checkpoint file, or "
              "models:/<name>@<alias> (default: models:/tlmed-<task>-<source site>@challenger).")] = None,
          strategy: Annotated[str, typer.Option(help=f"{describe(STRATEGIES)}.")] = "finetune",
          steps: Annotated[Optional[str], typer.Option(
              help=f"Comma-separated domain-adaptation steps: {describe(STEPS)} "
                   f"({'/'.join(needs_batch_norm(STEPS))} need a batch-norm network: --norm batch). Default: the "
                   f"config's; with --labels 0 and none configured, {','.join(ZERO_LABEL_STEPS)} (the documented "
                   "zero-label recipe); --steps '' for none.")] = None,
          labels: Annotated[Optional[int], typer.Option("--labels", help="Labelled target cases to use "
                                                        "(default: all in the training split; 0: none).")] = None,
          norm: Annotated[Optional[str], typer.Option(help="Override network.norm (instance or batch).")] = None,
          workspace: WorkspaceOpt = None, sites: SitesOpt = REPO_SITES, profile: ProfileOpt = "demo",
          config: ConfigOpt = None, seed: Optional[int] = None, network: NetworkOpt = None,
          trigger: str = typer.Option("manual", help="Recorded as the runs' trigger tag."),
          as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Adapt one site from a pretrained source with a strategy and steps; print and log the
    comparison with the source-only and from-scratch baselines (runs through the Prefect flow)."""
    from tl_med.sites import load_sites
    from tl_med.tracking import ALTERNATE, CHALLENGER, registered_model_name

    ws = resolve_workspace(workspace).ensure()
    base = load_config(profile, config, seed, network)
    chosen = adapt_steps(base, steps, labels)
    if chosen == ZERO_LABEL_STEPS and steps is None:
        err.print(f"zero target labels: adapting with the zero-label recipe, steps {','.join(chosen)} "
                  "(--steps '' for none)", markup=False)
    cfg = with_adapt(base, strategy=strategy, steps=chosen, n_labelled=labels, norm=norm)
    registry = load_sites(sites, ws.root)
    source = f"models:/{registered_model_name(registry.task, registry.source.name)}"
    # the registered sources, when no start is given: the alternate too, if the pipeline trained one
    alternates = [f"{source}@{ALTERNATE}"] if pretrained is None and cfg.pretrain.alternate and labels != 0 else []
    run_pipeline(ws, sites, cfg, [site], trigger, pretrained=pretrained or f"{source}@{CHALLENGER}", command="adapt",
                 as_json=as_json, verbose=verbose, alternates=alternates)


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
    with progress_view():
        result = ingest_site(config, ws, **registry.task_fields())
    s = result.report.summary()
    console.print(f"{site}: {s['inputs']} inputs = {s['converted']} converted + {s['skipped']} skipped + "
                  f"{s['quarantined']} quarantined; {result.n_labelled} labelled cases; "
                  f"{s['volumes_converted_now']} volumes converted now, {s['volumes_unchanged']} unchanged")
    for q in result.report.quarantined:  # real paths go to the terminal only, never to a file
        console.print(f"  quarantined {q.file} [{result.report.ref(q.file)}]: {q.reason}", markup=False)
    for o in result.report.outcomes.values():  # what was changed to use a file (a label reoriented)
        if o.outcome == "converted" and o.reason:
            console.print(f"  note {o.file} [{result.report.ref(o.file)}]: {o.reason}", markup=False)
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
    from tl_med.tracking import ui_address

    base = f"http://127.0.0.1:{port}"
    console.print(f"MLflow UI on {base} (store {ws.tracking_uri}); Ctrl-C to stop", markup=False)
    for name, exp_id in _experiments(ws):
        console.print(f"  {name}, per-site view: {ui_address(base, exp_id)}", markup=False)
    subprocess.run([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", ws.tracking_uri,
                    "--host", "127.0.0.1", "--port", str(port)], check=False)


def _experiments(ws) -> list[tuple[str, str]]:
    """(name, id) of the workspace's tl_med experiments (their saved view refreshed)."""
    from tl_med.mlflow_store import mlflow_client
    from tl_med.tracking import Tracker

    found = mlflow_client(ws.tracking_uri).search_experiments(filter_string="name LIKE 'tlmed-%'")
    return [(e.name, Tracker(ws.tracking_uri, e.name).experiment_id) for e in found]
