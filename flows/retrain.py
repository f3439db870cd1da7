"""``site-retrain``: retrain one target site (incremental ingest → preprocess → adapt → register).

The flow of the ``site-retrain`` deployment (``flows/deploy.py``): run nightly by the site's
schedule, on demand (``tl-med retrain``), or by the ``tl_med.site.new-data`` event the inbox
watcher emits. Its parameters are typed, so the Prefect UI and API validate them.

The trigger is recorded as the Prefect tag ``trigger:<kind>`` (plus ``site:<name>``) and as the
MLflow tag ``trigger``. A failed or crashed run leaves no registered model version behind
(:func:`flows.tasks.discard_failed_run`); training resumes from its per-epoch checkpoint when the
same work is run again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Completed, State

from flows.naming import run_name
from flows.preprocess import run_preprocess
from flows.tasks import adapt, context, discard_failed_run, ensure_gpu_limit, ingest
from flows.watch import active_retrains
from tl_med.config import PipelineConfig, Step, Strategy
from tl_med.errors import InputError
from tl_med.progress import note
from tl_med.results import PipelineResult, results_markdown
from tl_med.sites import SiteConfig, SitesConfig, load_sites
from tl_med.stages import SiteResult, check_trainable
from tl_med.retrain_start import pretrained_start
from tl_med.workspace import resolve_workspace

Trigger = Literal["manual", "schedule", "new-data"]
REPO_SITES = Path(__file__).resolve().parent.parent / "data_manifests" / "sites.yaml"


def retrain_config(profile: str, config_file: str | None, site: SiteConfig, strategy: str | None,
                   steps: list[str] | None, n_labelled: int | None) -> PipelineConfig:
    """The pipeline config with the site's ``retrain`` defaults, then the run's parameters, on top."""
    cfg = PipelineConfig.from_yaml(Path(config_file)) if config_file else PipelineConfig.profile(profile)
    adapt_over = {k: v for k, v in {**site.retrain.parameters(), "strategy": strategy, "steps": steps,
                                    "n_labelled": n_labelled}.items() if v is not None and k != "pretrained"}
    return PipelineConfig.model_validate({**cfg.model_dump(), "adapt": {**cfg.adapt.model_dump(), **adapt_over}})


def _tag_run(*tags: str) -> None:
    """Add tags to this flow run (deployment runs are created before the site is known)."""
    from prefect.client.orchestration import get_client

    if not flow_run.id:
        return
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(flow_run.id)
        client.update_flow_run(flow_run.id, tags=sorted(set(current.tags) | set(tags)))


def _refuse_if_running(site: str) -> None:
    """With a Prefect server, refuse a second active retrain of the same site."""
    if not os.environ.get("PREFECT_API_URL") or not flow_run.id:
        return
    others = [r for r in active_retrains(site) if str(r.id) != str(flow_run.id)]
    if others:
        raise InputError(f"site '{site}' is already retraining (flow run {others[0].name}); not starting a second run")


def _source_manifest(workspace: str, sites_file: str, sites: SitesConfig) -> str:
    """The source site's manifest for forgetting and source-side steps; ingested if missing."""
    existing = resolve_workspace(workspace).site_manifest(sites.source.name)
    return str(existing) if existing.is_file() else ingest(workspace, sites_file, sites.source.name)[0]


@flow(name="site-retrain", flow_run_name=run_name("site-retrain"), log_prints=True,
      on_failure=[discard_failed_run], on_crashed=[discard_failed_run], on_cancellation=[discard_failed_run])
def site_retrain(site: str, pretrained: str | None = None, strategy: Strategy | None = None,
                 steps: list[Step] | None = None, n_labelled: int | None = None, trigger: Trigger = "manual",
                 profile: Literal["demo", "tiny", "realistic"] = "demo", config_file: str | None = None,
                 workspace: str | None = None, sites_file: str | None = None) -> SiteResult | State:
    """Retrain ``site`` from ``pretrained`` (a MONAI bundle, checkpoint or ``models:/`` URI; default:
    the site's ``retrain.pretrained``, else the source model's approved ``champion``, resolved when
    the run starts; its ``challenger`` only while it has never had a champion, recorded as the MLflow
    tag ``pretrained_fallback``; see :func:`pretrained_start`).

    ``strategy``/``steps``/``n_labelled`` override the site's ``retrain`` defaults in ``sites.yaml``,
    which override the config (``profile`` or ``config_file``). Only new or changed studies are
    converted (incremental ingest); the adapted model is registered as a new version of the site's
    model, which takes ``challenger`` unless the policy of :mod:`tl_med.challenger` refuses it.
    """
    ws = resolve_workspace(workspace)
    sites_path = str(Path(sites_file or os.environ.get("TL_MED_SITES") or REPO_SITES).resolve())
    sites = load_sites(Path(sites_path), ws.root)
    target = sites.get(site)
    if target.role == "source":
        raise InputError(f"site '{target.name}' is the source site; retrain a target site "
                         f"({', '.join(t.name for t in sites.targets)})")
    _tag_run(f"trigger:{trigger}", f"site:{target.name}")
    _refuse_if_running(target.name)
    cfg = retrain_config(profile, config_file, target, strategy, steps, n_labelled).with_task(sites.task)
    config = cfg.model_dump(mode="json")
    manifest, quarantined = ingest(str(ws.root), sites_path, target.name)
    check_trainable(Path(manifest), target.name, cfg.adapt.n_labelled)
    source_manifest = _source_manifest(str(ws.root), sites_path, sites)
    context(str(ws.root), config, trigger).tracker.experiment_id  # create once, before fan-out
    ensure_gpu_limit()
    run_preprocess(str(ws.root), config, [manifest, source_manifest])
    tracker = context(str(ws.root), config, trigger).tracker
    start, start_tags, line = pretrained_start(tracker, sites.task, sites.source.name,
                                               pretrained or target.retrain.pretrained)
    if start_tags.get("pretrained_fallback"):
        get_run_logger().warning("site %s: %s", target.name, line)
        note(f"{target.name}: {line}")
    get_run_logger().info("retraining site %s (trigger %s) from %s", target.name, trigger, start)
    result = adapt(str(ws.root), config, target.name, manifest, start, trigger, source_manifest, start_tags)
    table = results_markdown(PipelineResult(source=None, sites=[result], pretrained=start))
    create_markdown_artifact(markdown=f"# Retrain of site `{target.name}` ({trigger})\n\n{table}",
                             key=f"retrain-{target.name}", description=f"Result of retraining site {target.name}")
    if quarantined:
        return Completed(message=f"completed with {quarantined} quarantined", data=result)
    return result
