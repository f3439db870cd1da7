"""``site-inference``: segment a site's new PACS studies with its champion, SEG back into the PACS.

The flow of the ``site-inference`` deployment (``flows/deploy.py``), run when the PACS watcher
announces new stable studies (the ``tl_med.site.new-data`` event), on the site's interval as a
safety net, and on demand (``prefect deployment run site-inference/site-inference -p site=east``).
It resolves the site's ``champion`` (or the ``model`` URI given) from MLflow, applies it to every
stable study of the site it has not segmented with that model yet
(:func:`tl_med.predict.pacs.segment_new_studies`), stores each DICOM SEG in the PACS, and files a
table artifact ``inference-<site>``. Studies are named by keyed hashes only: no identifier of a
patient or study reaches Prefect (parameters, logs, artifacts) or the workspace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.states import Completed

from flows.naming import run_name
from tl_med.errors import InputError
from tl_med.predict.pacs import StudyResult, segment_new_studies
from tl_med.sites import load_sites
from tl_med.workspace import resolve_workspace

Trigger = Literal["manual", "schedule", "new-data"]


@task(name="segment-new-studies", retries=2, retry_delay_seconds=30)
def segment(workspace: str, sites_file: str, site: str, model: str | None) -> list[StudyResult]:
    """Resolve the model and segment the site's new studies (retried when the PACS is unreachable)."""
    import torch

    from tl_med.inference import Predictor
    from tl_med.models.spec import load_package
    from tl_med.models.zoo import resolve_device
    from tl_med.predict.models import resolve_model
    from tl_med.tracking import Tracker

    ws = resolve_workspace(workspace)
    sites = load_sites(Path(sites_file), ws.root)
    config = sites.get(site)
    tracker = Tracker(ws.tracking_uri, "tlmed-predict")
    tmp = ws.cache / "models" / site
    folder, label = resolve_model(model, site=site, task=sites.task, tracker=tracker, dst=tmp)
    net, spec = load_package(folder)
    with torch.inference_mode():
        return segment_new_studies(config, ws, Predictor(net, spec, resolve_device("auto")), model=label)


def _table(results: list[StudyResult]) -> list[dict]:
    return [{"study": r.study, "model": r.model, "series": r.series, "segmented": r.segmented,
             "SEGs stored": r.stored,
             "volumes (ml)": "; ".join(", ".join(f"{k} {v:.1f}" for k, v in v.items()) for v in r.volumes_ml),
             "problems": "; ".join(r.problems)} for r in results]


@flow(name="site-inference", flow_run_name=run_name("site-inference"), log_prints=True,
      description="Segment a site's new PACS studies with its champion and store each DICOM SEG in the PACS.")
def site_inference(site: str, workspace: str, sites_file: str, model: str | None = None,
                   trigger: Trigger = "manual"):
    """Segment ``site``'s new stable PACS studies with its champion (or ``model``)."""
    ws = resolve_workspace(workspace)
    config = load_sites(Path(sites_file), ws.root).get(site)
    if config.pacs is None:
        if trigger == "new-data":  # an inbox delivery: nothing for inference to do
            return Completed(message=f"site {site} has no PACS: nothing to segment", data=[])
        raise InputError(f"site '{site}' has no pacs: block in {sites_file}: nothing to segment")
    results = segment(str(ws.root), str(Path(sites_file).resolve()), site, model)
    get_run_logger().info("site %s (%s): %d new studies segmented, %d SEGs stored", site, trigger, len(results),
                          sum(r.stored for r in results))
    if results:
        create_table_artifact(table=_table(results), key=f"inference-{site}",
                              description=f"Studies of site {site} segmented by {results[0].model} "
                                          "(named by keyed hashes; SEGs stored in the site's PACS)")
    problems = sum(bool(r.problems) for r in results)
    if problems:
        return Completed(message=f"{problems} of {len(results)} studies with problems", data=results)
    return results
