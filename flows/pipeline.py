"""The per-site adaptation pipeline: ingest → preprocess → pretrain (source) → adapt (targets).

Tasks pass paths, ids and small result records between stages, never tensors.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, State

from flows.naming import run_name
from flows.preprocess import run_preprocess
from flows.tasks import adapt, context, discard_failed_run, ensure_gpu_limit, ingest, pretrain
from tl_med.config import PipelineConfig
from tl_med.results import PipelineResult, results_markdown
from tl_med.sites import SitesConfig, load_sites
from tl_med.stages import check_trainable


def comparison_markdown(workspace: str, config: dict, sites: list[str]) -> str:
    from tl_med.report import comparison, to_markdown

    ctx = context(workspace, config, "")
    return to_markdown(comparison(ctx.tracker.client, ctx.cfg.task, sites, ctx.tracker.experiment))


@flow(name="site-adaptation-pipeline", flow_run_name=run_name("site-adaptation-pipeline"), log_prints=True,
      on_failure=[discard_failed_run], on_crashed=[discard_failed_run], on_cancellation=[discard_failed_run])
def site_adaptation_pipeline(workspace: str, sites_file: str, config: dict | None = None,
                             targets: list[str] | None = None, trigger: str = "manual",
                             pretrained: str | None = None, alternates: list[str] | None = None
                             ) -> PipelineResult | State:
    """Ingest every site, pretrain on the source site (unless ``pretrained`` names a bundle,
    checkpoint or ``models:/`` URI to start from; with ``pretrain.alternate``, a second source too),
    adapt each target site beside its baselines (from both sources, keeping the better on validation).
    ``alternates``: with ``pretrained``, further sources to adapt from where they can be loaded.

    Quarantined inputs do not fail the run: it ends ``Completed`` with the message
    ``completed with N quarantined`` (the ingest artifacts list why).
    """
    sites: SitesConfig = load_sites(Path(sites_file), Path(workspace))
    cfg = PipelineConfig.model_validate(config or {}).with_task(sites.task)
    chosen = [sites.get(t) for t in targets] if targets else sites.targets
    config_json = cfg.model_dump(mode="json")
    ingested = {s.name: ingest(workspace, sites_file, s.name) for s in [sites.source, *chosen]}
    manifests = {name: path for name, (path, _) in ingested.items()}
    quarantined = sum(n for _, n in ingested.values())
    for name, manifest in manifests.items():  # refuse untrainable sites before anything reaches MLflow
        check_trainable(Path(manifest), name, None if name == sites.source.name else cfg.adapt.n_labelled)
    context(workspace, config_json, trigger).tracker.experiment_id  # create once, before fan-out
    ensure_gpu_limit()
    run_preprocess(workspace, config_json, list(manifests.values()))
    source_manifest = manifests[sites.source.name]
    source = None if pretrained else pretrain(workspace, config_json, sites.source.name, source_manifest, trigger)
    # the second source, where a site may adapt from it: a pipeline that pretrains, with labels
    alternate = (pretrain(workspace, config_json, sites.source.name, source_manifest, trigger, alternate=True)
                 if source and cfg.pretrain.alternate and cfg.adapt.n_labelled != 0 else None)
    start = pretrained or source.weights_uri
    others = [f"models:/{alternate.model_name}/{alternate.model_version}"] if alternate else list(alternates or [])
    results = [adapt(workspace, config_json, s.name, manifests[s.name], start, trigger, source_manifest,
                     alternates=others) for s in chosen]
    outcome = PipelineResult(source=source, sites=results, pretrained=start, alternate=alternate)
    create_markdown_artifact(markdown=results_markdown(outcome), key="site-results",
                             description="Per-site Dice: source-only vs adapted")
    create_markdown_artifact(markdown=comparison_markdown(workspace, config_json, [s.name for s in chosen]),
                             key="comparison-report", description="Strategies and baselines per site, "
                             "champion vs challenger (same table as `tl-med report`)")
    if quarantined:  # a finished run that left inputs behind says so in its final state
        return Completed(message=f"completed with {quarantined} quarantined", data=outcome)
    return outcome
