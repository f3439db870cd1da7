"""The per-site adaptation pipeline: ingest → preprocess → pretrain (source) → adapt (targets).

Tasks pass paths, ids and small result records between stages, never tensors.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, State

from tl_med.config import PipelineConfig
from tl_med.ingest.site import ingest_site
from tl_med.ingest.summary import ingest_markdown
from tl_med.results import PipelineResult, results_markdown
from tl_med.sites import SitesConfig, load_sites
from tl_med.stages import (PretrainResult, SiteResult, StageContext, adapt_site, check_trainable,
                           pretrain_source, warm_cache)
from tl_med.tracking import Tracker
from tl_med.workspace import Workspace


@task(name="ingest-site", cache_policy=NO_CACHE)
def ingest(workspace: str, sites_file: str, site: str) -> tuple[str, int]:
    """Ingest one site; returns its manifest path and how many inputs were quarantined."""
    ws = Workspace(Path(workspace))
    sites = load_sites(Path(sites_file), ws.root)
    result = ingest_site(sites.get(site), ws, task=sites.task)
    create_markdown_artifact(markdown=ingest_markdown(result.report), key=f"ingest-{site}",
                             description=f"Ingest report of site {site} (de-identified)")
    return str(result.manifest_path), result.report.count("quarantined")


@task(name="preprocess-site", cache_policy=NO_CACHE)
def preprocess(workspace: str, config: dict, manifest_path: str) -> int:
    return warm_cache(Workspace(Path(workspace)), PipelineConfig.model_validate(config), Path(manifest_path))


def _context(workspace: str, config: dict, trigger: str) -> StageContext:
    ws = Workspace(Path(workspace))
    cfg = PipelineConfig.model_validate(config)
    tracker = Tracker(ws.tracking_uri, f"tlmed-{cfg.task}", ws.mlflow_artifacts)
    return StageContext(ws=ws, cfg=cfg, tracker=tracker, trigger=trigger, flow_run_id=str(flow_run.id or ""))


@task(name="pretrain-source", cache_policy=NO_CACHE)
def pretrain(workspace: str, config: dict, site: str, manifest_path: str, trigger: str) -> PretrainResult:
    return pretrain_source(_context(workspace, config, trigger), site, Path(manifest_path))


@task(name="adapt-site", cache_policy=NO_CACHE)
def adapt(workspace: str, config: dict, site: str, manifest_path: str, pretrained: str,
          trigger: str, source_manifest: str) -> SiteResult:
    return adapt_site(_context(workspace, config, trigger), site, Path(manifest_path), pretrained,
                      source_manifest=Path(source_manifest))


def comparison_markdown(workspace: str, config: dict, sites: list[str]) -> str:
    from tl_med.report import comparison, to_markdown

    ctx = _context(workspace, config, "")
    return to_markdown(comparison(ctx.tracker.client, ctx.cfg.task, sites, ctx.tracker.experiment))


@flow(name="site-adaptation-pipeline", log_prints=True)
def site_adaptation_pipeline(workspace: str, sites_file: str, config: dict | None = None,
                             targets: list[str] | None = None, trigger: str = "manual",
                             pretrained: str | None = None) -> PipelineResult | State:
    """Ingest every site, pretrain on the source site (unless ``pretrained`` names a bundle,
    checkpoint or ``models:/`` URI to start from), adapt each target site beside its baselines.

    Quarantined inputs do not fail the run: it ends ``Completed`` with the message
    ``completed with N quarantined`` (the ingest artifacts list why).
    """
    cfg = PipelineConfig.model_validate(config or {})
    sites: SitesConfig = load_sites(Path(sites_file), Path(workspace))
    chosen = [sites.get(t) for t in targets] if targets else sites.targets
    config_json = cfg.model_dump(mode="json")
    ingested = {s.name: ingest(workspace, sites_file, s.name) for s in [sites.source, *chosen]}
    manifests = {name: path for name, (path, _) in ingested.items()}
    quarantined = sum(n for _, n in ingested.values())
    for name, manifest in manifests.items():  # refuse untrainable sites before anything reaches MLflow
        check_trainable(Path(manifest), name, None if name == sites.source.name else cfg.adapt.n_labelled)
    _context(workspace, config_json, trigger).tracker.experiment_id  # create once, before fan-out
    for manifest in manifests.values():
        preprocess(workspace, config_json, manifest)
    source_manifest = manifests[sites.source.name]
    source = None if pretrained else pretrain(workspace, config_json, sites.source.name, source_manifest, trigger)
    start = pretrained or source.weights_uri
    results = [adapt(workspace, config_json, s.name, manifests[s.name], start, trigger, source_manifest)
               for s in chosen]
    outcome = PipelineResult(source=source, sites=results, pretrained=start)
    create_markdown_artifact(markdown=results_markdown(outcome), key="site-results",
                             description="Per-site Dice: source-only vs adapted")
    create_markdown_artifact(markdown=comparison_markdown(workspace, config_json, [s.name for s in chosen]),
                             key="comparison-report", description="Strategies and baselines per site, "
                             "champion vs challenger (same table as `tl-med report`)")
    if quarantined:  # a finished run that left inputs behind says so in its final state
        return Completed(message=f"completed with {quarantined} quarantined", data=outcome)
    return outcome
