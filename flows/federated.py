"""``federated-pretrain``: ingest every participating site, preprocess, then pretrain one network
across the sites with NVFlare (FedAvg or FedProx; only weights leave a site) and register it as
``tlmed-<task>-federated`` (alias ``challenger``). Per-site adaptation then starts from it::

    tl-med adapt --site east --pretrained models:/tlmed-<task>-federated@challenger

Run it locally with ``tl-med federated`` (a temporary Prefect server, MLflow in the workspace), or
from a work pool through the ``federated-pretrain`` deployment (``flows/deploy.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.naming import run_name
from flows.preprocess import run_preprocess
from flows.tasks import context, discard_failed_run, gpu_slot, ingest
from tl_med.config import PipelineConfig
from tl_med.federated import FederatedConfig, FederatedResult, federated_pretrain
from tl_med.sites import load_sites
from tl_med.stages import check_trainable

__all__ = ["federated_pretrain_flow", "federated_markdown"]


@task(name="federated-train", cache_policy=NO_CACHE)
def federated_train(workspace: str, config: dict, manifests: dict[str, str], federated: dict, trigger: str,
                    pretrained: str | None) -> FederatedResult:
    with gpu_slot():
        return federated_pretrain(context(workspace, config, trigger), {s: Path(m) for s, m in manifests.items()},
                                  FederatedConfig.model_validate(federated), pretrained=pretrained)


def federated_markdown(result: FederatedResult) -> str:
    rows = "\n".join(f"| {site} | {dice:.3f} |" for site, dice in result.site_dice.items())
    return (f"# Federated pretraining ({result.algorithm}, {result.rounds} rounds)\n\n"
            f"Registered `{result.model_name}` v{result.model_version} (challenger); "
            f"{result.bytes_per_round / 1e6:.2f} MB of weights per round, {result.seconds:.0f} s.\n\n"
            f"| site | test Dice of the global model |\n|---|---|\n{rows}\n| all | {result.test_dice:.3f} |\n")


@flow(name="federated-pretrain", flow_run_name=run_name("federated-pretrain"), log_prints=True,
      on_failure=[discard_failed_run], on_crashed=[discard_failed_run], on_cancellation=[discard_failed_run])
def federated_pretrain_flow(workspace: str, sites_file: str, profile: str = "demo", config_file: str | None = None,
                            participants: list[str] | None = None, rounds: int = 2, local_epochs: int = 1,
                            algorithm: Literal["fedavg", "fedprox"] = "fedavg", mu: float = 0.0,
                            trigger: str = "manual", pretrained: str | None = None,
                            config: dict | None = None, startup_kit: str | None = None,
                            admin: str = "admin@nvidia.com",
                            privacy: Literal["none", "percentile"] = "none") -> FederatedResult:
    """Ingest and preprocess each participating site (default: every site in ``sites_file``), then
    pretrain across them with NVFlare and register the global model. ``config`` (a whole pipeline
    config, as the CLI passes it) wins over ``profile``/``config_file``. ``startup_kit``: run on a
    provisioned NVFlare deployment as ``admin`` instead of the simulator. ``privacy``: see
    :class:`tl_med.federated.FederatedConfig`."""
    sites = load_sites(Path(sites_file), Path(workspace))
    if config is not None:
        base = PipelineConfig.model_validate(config)
    else:
        base = PipelineConfig.from_yaml(Path(config_file)) if config_file else PipelineConfig.profile(profile)
    cfg = base.with_task(sites.task).model_dump(mode="json")
    fed = FederatedConfig(rounds=rounds, local_epochs=local_epochs, algorithm=algorithm, mu=mu, startup_kit=startup_kit,
                          admin=admin, privacy=privacy)
    names = participants or [s.name for s in sites.sites]
    manifests = {name: ingest(workspace, sites_file, name)[0] for name in names}
    for name, manifest in manifests.items():  # refuse untrainable sites before anything reaches MLflow
        check_trainable(Path(manifest), name)
    context(workspace, cfg, trigger).tracker.experiment_id  # create once, before the job's processes
    run_preprocess(workspace, cfg, list(manifests.values()))
    result = federated_train(workspace, cfg, manifests, fed.model_dump(mode="json"), trigger, pretrained)
    create_markdown_artifact(markdown=federated_markdown(result), key="federated-pretrain",
                             description="Global model's test Dice per site")
    return result
