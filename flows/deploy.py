"""The ``site-retrain`` and ``site-inference`` deployments, with their schedules and triggers.

``site-retrain``:

- One schedule per target site with a ``schedule:`` (cron + time zone), passing
  ``{"site": <name>, "trigger": "schedule"}``.
- One ``DeploymentEventTrigger``: every ``tl_med.site.new-data`` event (emitted by the inbox
  watcher, or by any system that delivers data) starts a run for the site named in the event's
  resource, with ``trigger: new-data``.

``site-inference`` (sites with a ``pacs:``): the same new-data event (the PACS watcher emits it
when studies become stable) segments the site's new studies with its champion, and an interval
schedule per PACS site (``INFERENCE_EVERY``) catches studies whose announcement was held back.

``federated-pretrain`` (on demand, no schedule): pretrain across every site with NVFlare
(``flows/federated.py``); start it from the Prefect UI or ``prefect deployment run``.

``tl-med serve`` serves them from a local runner. For workers on other machines, register it with a
work pool instead (the flow is addressed by module path, so any worker with tl_med installed runs
it)::

    python -m flows.deploy --work-pool tl-med --sites data_manifests/sites.yaml
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from datetime import timedelta

from prefect.schedules import Cron, Interval

from flows.federated import federated_pretrain_flow
from flows.inference import site_inference
from flows.retrain import site_retrain
from tl_med.inbox import EVENT_NEW_DATA
from tl_med.sites import SitesConfig

DEPLOYMENT = "site-retrain"
FULL_NAME = f"{site_retrain.name}/{DEPLOYMENT}"
INFERENCE_DEPLOYMENT = "site-inference"
INFERENCE_EVERY = timedelta(minutes=15)
FEDERATED_DEPLOYMENT = "federated-pretrain"


def schedules(sites: SitesConfig) -> list:
    return [Cron(s.schedule.cron, timezone=s.schedule.timezone, slug=f"{s.name}-retrain",
                 parameters={"site": s.name, "trigger": "schedule"})
            for s in sites.targets if s.schedule is not None]


def new_data_trigger(name: str = "retrain a site when it delivers new data") -> DeploymentEventTrigger:
    return DeploymentEventTrigger(
        name=name,
        expect={EVENT_NEW_DATA},
        match={"prefect.resource.id": "tl_med.site.*"},
        parameters={"site": "{{ event.resource['tl_med.site'] }}", "trigger": "new-data"},
    )


def build_deployment(sites: SitesConfig, *, workspace: str, sites_file: str, profile: str = "demo",
                     config_file: str | None = None) -> RunnerDeployment:
    """The deployment object (not yet registered): serve it, or ``apply`` it to a work pool."""
    return site_retrain.to_deployment(
        name=DEPLOYMENT,
        schedules=schedules(sites),
        triggers=[new_data_trigger()],
        parameters={"workspace": workspace, "sites_file": sites_file, "profile": profile,
                    "config_file": config_file},
        tags=["tl_med"],
        description="Retrain one target site: incremental ingest, preprocess, adapt beside baselines, "
                    "register the challenger. Runs nightly per site, on demand and on new data.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def build_inference_deployment(sites: SitesConfig, *, workspace: str, sites_file: str,
                               every: timedelta = INFERENCE_EVERY) -> RunnerDeployment:
    """The ``site-inference`` deployment: new-data trigger, and an interval per site with a PACS."""
    return site_inference.to_deployment(
        name=INFERENCE_DEPLOYMENT,
        concurrency_limit=1,  # one ledger writer at a time (a trigger and the interval may coincide)
        schedules=[Interval(every, slug=f"{s.name}-inference", parameters={"site": s.name, "trigger": "schedule"})
                   for s in sites.sites if s.pacs is not None],
        triggers=[new_data_trigger("segment a site's new PACS studies with its champion")],
        parameters={"workspace": workspace, "sites_file": sites_file},
        tags=["tl_med"],
        description="Segment a site's new stable PACS studies with its champion; store each DICOM SEG in the "
                    "PACS; file a table artifact of the studies (keyed hashes only).",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def build_federated_deployment(*, workspace: str, sites_file: str, profile: str = "demo",
                               config_file: str | None = None) -> RunnerDeployment:
    """The on-demand ``federated-pretrain`` deployment (rounds, algorithm, sites are run parameters)."""
    return federated_pretrain_flow.to_deployment(
        name=FEDERATED_DEPLOYMENT,
        concurrency_limit=1,  # one federation at a time: each client trains on its site's data
        parameters={"workspace": workspace, "sites_file": sites_file, "profile": profile, "config_file": config_file},
        tags=["tl_med"],
        description="Pretrain one network across the sites with NVFlare (FedAvg/FedProx; only weights leave a site) "
                    "and register it as tlmed-<task>-federated (challenger). Needs the federated extra.",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def build_deployments(sites: SitesConfig, *, workspace: str, sites_file: str, profile: str = "demo",
                      config_file: str | None = None) -> list[RunnerDeployment]:
    """Every tl_med deployment: ``site-retrain``, ``site-inference`` and ``federated-pretrain``."""
    common = dict(workspace=workspace, sites_file=sites_file)
    return [build_deployment(sites, **common, profile=profile, config_file=config_file),
            build_inference_deployment(sites, **common),
            build_federated_deployment(**common, profile=profile, config_file=config_file)]


def trigger_retrain(parameters: dict, *, wait: bool, server: str):
    """Start a ``site-retrain`` run through the API (tags ``trigger:manual``, ``site:<name>``);
    the finished run when ``wait``, else the scheduled one."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    from tl_med.errors import InputError

    try:
        return run_deployment(FULL_NAME, parameters=parameters, timeout=None if wait else 0, poll_interval=2,
                              tags=[f"trigger:{parameters.get('trigger', 'manual')}", f"site:{parameters['site']}"])
    except ObjectNotFound:
        raise InputError(f"no deployment {FULL_NAME} on {server}: start `tl-med serve` first") from None


def serve_deployment(*deployments: RunnerDeployment) -> None:
    """Serve the deployments from this process until interrupted (schedules, triggers, manual runs)."""
    from prefect import serve

    serve(*deployments)


def main() -> None:  # pragma: no cover - exercised by the docker deploy step, not here
    from tl_med.sites import load_sites
    from tl_med.workspace import resolve_workspace

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-pool", required=True)
    parser.add_argument("--sites", default="data_manifests/sites.yaml")
    parser.add_argument("--workspace", default=None)
    parser.add_argument("--profile", default="demo")
    args = parser.parse_args()
    ws = resolve_workspace(args.workspace)
    sites_file = str(Path(args.sites).resolve())
    for deployment in build_deployments(load_sites(Path(sites_file), ws.root), workspace=str(ws.root),
                                        sites_file=sites_file, profile=args.profile):
        deployment_id = deployment.apply(work_pool_name=args.work_pool)
        print(f"deployment {deployment.flow_name}/{deployment.name} ({deployment_id}) registered on work pool "
              f"{args.work_pool}")

if __name__ == "__main__":
    main()
