"""Prefect tasks shared by the flows: thin wrappers over ``tl_med`` that pass paths and ids.

- Ingest fans out per series: ``scan-site`` reads the headers and plans the stacks,
  ``convert-series`` is mapped over the stacks that changed, ``finish-ingest`` pairs labels and
  writes the manifest. ``preprocess-case`` is mapped over a site's cases.
- I/O tasks retry with exponential backoff. ``convert-series`` and ``preprocess-case`` are cached
  by content hash (input files + options + converter version; case content + preprocessing
  config), so a retried or repeated run skips finished work; a task whose output has gone from
  disk runs with ``refresh_cache`` and rebuilds it.
- With a Prefect server (``PREFECT_API_URL``), training holds a slot of the global concurrency
  limit ``gpu`` (created with ``$TL_MED_GPU_SLOTS`` slots, default 1, when missing; ``tl-med serve
  --gpu-slots`` sets it). A crashed holder's slot returns when its 60 s lease lapses (the server's
  repossessor service). The temporary in-process server runs no such service, and a single
  process needs no slot, so without a server training takes none.

The de-identification key never travels as a task parameter: tasks read it from the workspace.
"""

from __future__ import annotations

import hashlib
import os
import socket
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from prefect import task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.context import TaskRunContext
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff

from tl_med.config import PipelineConfig, PreprocessConfig
from tl_med.ingest.site import IngestPlan, convert_job, finish_ingest, n_inputs, plan_ingest, worker_pool
from tl_med.ingest.stacks import StackJob, StackOutcome, nifti_name
from tl_med.ingest.summary import ingest_markdown
from tl_med.manifests import all_items
from tl_med.progress import activity
from tl_med.sites import load_sites
from tl_med.stages import PretrainResult, SiteResult, StageContext, adapt_site, pretrain_source
from tl_med.tracking import Tracker
from tl_med.workspace import Workspace

GPU_LIMIT = "gpu"
IO_RETRIES = dict(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5)


def _site(workspace: str, sites_file: str, site: str):
    ws = Workspace(Path(workspace))
    return ws, load_sites(Path(sites_file), ws.root)


@task(name="scan-site", cache_policy=NO_CACHE, **IO_RETRIES)
def scan_site(workspace: str, sites_file: str, site: str) -> IngestPlan:
    """Read every header of the site and plan its stacks (in memory only: holds UIDs)."""
    ws, sites = _site(workspace, sites_file, site)
    config = sites.get(site)
    with worker_pool(config.ingest.n_workers(), n_inputs(config)) as pool:
        return plan_ingest(config, ws, pool=pool, **sites.task_fields())


def _series_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The stack's content fingerprint (input file hashes, options, converter version)."""
    return f"convert-series-{parameters['job'].fingerprint}"


def _series_output(workspace: str, sites_file: str, site: str, job: StackJob) -> Path:
    ws, sites = _site(workspace, sites_file, site)
    config = sites.get(site)
    return ws.data / config.name / "images" / nifti_name(job.cid, config.ingest)


def _map_cached(task_, static: tuple, items: list, output: Any, progress: tuple[str, str, str]) -> list:
    """Map ``task_`` over ``items``; items whose ``output(item)`` is missing refresh their cache entry.
    ``progress`` is (key, description, unit) of the progress report, one step per finished item."""
    have = [it for it in items if output(it).is_file()]
    gone = [it for it in items if not output(it).is_file()]
    futures = list(task_.map(*map(unmapped, static), have)) if have else []
    if gone:
        futures += list(task_.with_options(refresh_cache=True).map(*map(unmapped, static), gone))
    order = {id(it): i for i, it in enumerate(have + gone)}
    key, description, unit = progress
    with activity(key, description, total=len(futures), unit=unit) as act:
        for _ in as_completed(futures):
            act.advance()
    results = [f.result() for f in futures]
    return [results[order[id(it)]] for it in items]


@task(name="convert-series", cache_key_fn=_series_key, persist_result=True, **IO_RETRIES)
def convert_series(workspace: str, sites_file: str, site: str, job: StackJob) -> StackOutcome:
    """Geometry, pixels and de-identified NIfTI of one stack (bad stacks come back with a reason)."""
    ws, sites = _site(workspace, sites_file, site)
    return convert_job(sites.get(site), ws, job)


@task(name="finish-ingest", cache_policy=NO_CACHE, **IO_RETRIES)
def finish_site(plan: IngestPlan, outcomes: list[StackOutcome]) -> tuple[str, int]:
    """Labels, manifest, report and the Prefect artifact ``ingest-<site>``; (manifest, n quarantined)."""
    result = finish_ingest(plan, outcomes)
    create_markdown_artifact(markdown=ingest_markdown(result.report), key=f"ingest-{result.site}",
                             description=f"Ingest report of site {result.site} (de-identified)")
    return str(result.manifest_path), result.report.count("quarantined")


@task(name="pull-pacs", cache_policy=NO_CACHE, **IO_RETRIES)
def pull_pacs(workspace: str, sites_file: str, site: str) -> dict[str, object]:
    """Fetch the site's new studies from its PACS (resumable); the artifact ``pacs-<site>`` says
    what was pulled and which studies failed (keyed references only)."""
    from tl_med.pacs.pull import pull_site

    ws, sites = _site(workspace, sites_file, site)
    report = pull_site(sites.get(site), ws)
    failed = "".join(f"\n- {line}" for line in report.failed)
    create_markdown_artifact(markdown=f"# PACS pull of site `{site}`\n\n{report.line()}\n{failed}\n",
                             key=f"pacs-{site}", description=f"PACS pull of site {site}")
    return report.summary()


def ingest(workspace: str, sites_file: str, site: str) -> tuple[str, int]:
    """Ingest one site: pull from its PACS (if it has one), scan, convert the changed stacks in
    parallel task runs, finish."""
    if _site(workspace, sites_file, site)[1].get(site).pacs is not None:
        pull_pacs(workspace, sites_file, site)
    plan = scan_site(workspace, sites_file, site)
    outcomes = _map_cached(convert_series, (workspace, sites_file, site), plan.todo,
                           lambda job: _series_output(workspace, sites_file, site, job),
                           (f"convert:{site}", f"ingest {site}: convert series", "series"))
    return finish_site(plan, outcomes)


def _case_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Case content (image and label sha256) and paths + the preprocessing config."""
    cfg = PreprocessConfig.model_validate(parameters["preprocess"])
    item = parameters["item"]
    blob = f"{item['content']}|{item['image']}|{item.get('label', '')}|{sorted(cfg.model_dump(mode='json').items())}"
    return "preprocess-case-" + hashlib.sha256(blob.encode()).hexdigest()


@task(name="preprocess-case", cache_key_fn=_case_key, persist_result=True, **IO_RETRIES)
def preprocess_case(workspace: str, preprocess: dict, item: dict) -> dict[str, str]:
    """The deterministic MONAI preprocessing of one case into the disk cache; where it ran."""
    from tl_med.data.transforms import preprocess_item

    path = preprocess_item(item, PreprocessConfig.model_validate(preprocess), Workspace(Path(workspace)).cache)
    return {"case_id": item["case_id"], "cache": str(path), "worker": f"{socket.gethostname()}:{os.getpid()}"}


def manifest_items(manifest_path: str) -> list[dict]:
    return all_items(Path(manifest_path))


def preprocess(workspace: str, config: dict, manifests: list[str]) -> list[dict[str, str]]:
    """Map ``preprocess-case`` over every case of the given site manifests."""
    from tl_med.data.transforms import cache_file

    items = [it for m in manifests for it in manifest_items(m)]
    cfg = PipelineConfig.model_validate(config).preprocess
    cache = Workspace(Path(workspace)).cache
    sites = ", ".join(Path(m).stem for m in manifests)
    return _map_cached(preprocess_case, (workspace, cfg.model_dump(mode="json")), items,
                       lambda item: cache_file(item, cfg, cache), (f"preprocess:{sites}", f"preprocess {sites}", "cases"))


def context(workspace: str, config: dict, trigger: str, extra_tags: dict[str, str] | None = None) -> StageContext:
    ws = Workspace(Path(workspace))
    cfg = PipelineConfig.model_validate(config)
    tracker = Tracker(ws.tracking_uri, f"tlmed-{cfg.task}", ws.artifact_root)
    return StageContext(ws=ws, cfg=cfg, tracker=tracker, trigger=trigger, flow_run_id=str(flow_run.id or ""),
                        extra_tags=dict(extra_tags or {}))


def _with_server() -> bool:
    return bool(os.environ.get("PREFECT_API_URL"))


def gpu_slot() -> AbstractContextManager[None]:
    """Hold one ``gpu`` slot while training (with a server; see the module notes)."""
    return concurrency(GPU_LIMIT, occupy=1, lease_duration=60, strict=True) if _with_server() else nullcontext()


def ensure_gpu_limit(slots: int | None = None) -> int:
    """Create the ``gpu`` global concurrency limit when missing (or set it to ``slots``); 0 without a server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    if not _with_server():
        return 0
    with get_client(sync_client=True) as client:
        try:
            current = client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        except ObjectNotFound:
            limit = slots or int(os.environ.get("TL_MED_GPU_SLOTS", "1"))
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=GPU_LIMIT, limit=limit))
            return limit
        if slots is not None and current.limit != slots:
            client.update_global_concurrency_limit(GPU_LIMIT, GlobalConcurrencyLimitUpdate(limit=slots))
            return slots
        return current.limit


@task(name="pretrain-source", cache_policy=NO_CACHE)
def pretrain(workspace: str, config: dict, site: str, manifest_path: str, trigger: str,
             alternate: bool = False) -> PretrainResult:
    with gpu_slot():
        return pretrain_source(context(workspace, config, trigger), site, Path(manifest_path), alternate=alternate)


@task(name="adapt-site", cache_policy=NO_CACHE)
def adapt(workspace: str, config: dict, site: str, manifest_path: str, pretrained: str,
          trigger: str, source_manifest: str | None, run_tags: dict[str, str] | None = None,
          alternates: list[str] | None = None) -> SiteResult:
    """Adapt one site; ``run_tags`` are added to its MLflow runs (e.g. how the start was resolved);
    ``alternates``: further sources the site also adapts from (the best on validation is kept)."""
    with gpu_slot():
        return adapt_site(context(workspace, config, trigger, run_tags), site, Path(manifest_path), pretrained,
                          source_manifest=Path(source_manifest) if source_manifest else None,
                          alternates=tuple(alternates or ()))


def discard_failed_run(flow, run, state) -> None:
    """Flow hook (failure, crash, cancellation): no model version or unfinished MLflow run of a
    failed flow run survives it."""
    workspace = run.parameters.get("workspace") or os.environ.get("TL_MED_HOME")
    config = run.parameters.get("config") or {}
    if not workspace:
        return
    if config:
        cfg = PipelineConfig.model_validate(config)
    elif run.parameters.get("config_file"):
        cfg = PipelineConfig.from_yaml(Path(run.parameters["config_file"]))
    else:
        cfg = PipelineConfig.profile(run.parameters.get("profile", "demo"))
    ws = Workspace(Path(workspace))
    if ws.uses_embedded_mlflow and not ws.mlflow_db.exists():
        return  # it failed before anything reached MLflow
    tracker = Tracker(ws.tracking_uri, f"tlmed-{cfg.task}", ws.artifact_root)
    deleted, failed = tracker.discard_flow_run(str(run.id))
    if deleted or failed:
        print(f"flow run {run.name} {state.type.value.lower()}: removed model versions {deleted or 'none'}, "
              f"marked {len(failed)} MLflow run(s) FAILED")
