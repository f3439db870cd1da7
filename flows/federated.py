"""``federated-pretrain``: ingest every participating site, preprocess, then pretrain one network
across the sites with NVFlare (FedAvg or FedProx; only weights leave a site) and register it as
``tlmed-<task>-federated`` (alias ``challenger``). Per-site adaptation then starts from it::

    tl-med adapt --site east --pretrained models:/tlmed-<task>-federated@challenger

Run it locally (a temporary Prefect server, MLflow in the workspace)::

    python -m flows.federated --workspace W --sites data_manifests/sites-tiny.yaml --profile tiny --rounds 2
"""

from __future__ import annotations

import argparse
import sys

if __name__ == "__main__":  # before Prefect is imported: it reads PREFECT_HOME once, at import
    from tl_med.workspace import resolve_workspace

    _ws = [sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--workspace"]
    resolve_workspace(_ws[-1] if _ws else None).activate()

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

__all__ = ["federated_pretrain_flow", "federated_markdown", "main"]


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
                            trigger: str = "manual", pretrained: str | None = None) -> FederatedResult:
    """Ingest and preprocess each participating site (default: every site in ``sites_file``), then
    pretrain across them with NVFlare and register the global model."""
    sites = load_sites(Path(sites_file), Path(workspace))
    base = PipelineConfig.from_yaml(Path(config_file)) if config_file else PipelineConfig.profile(profile)
    cfg = base.with_task(sites.task).model_dump(mode="json")
    fed = FederatedConfig(rounds=rounds, local_epochs=local_epochs, algorithm=algorithm, mu=mu)
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


def main(argv: list[str] | None = None) -> FederatedResult:
    """``python -m flows.federated --workspace W --sites S --profile tiny --rounds 2``."""
    from tl_med.workspace import resolve_workspace

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default=None)
    parser.add_argument("--sites", default="data_manifests/sites.yaml")
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--config", default=None, help="a pipeline config YAML (instead of --profile)")
    parser.add_argument("--site", action="append", dest="participants", help="a participating site (repeat)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--algorithm", choices=["fedavg", "fedprox"], default="fedavg")
    parser.add_argument("--mu", type=float, default=0.0)
    parser.add_argument("--pretrained", default=None)
    args = parser.parse_args(argv)
    ws = resolve_workspace(args.workspace).ensure()
    result = federated_pretrain_flow(str(ws.root), str(Path(args.sites).resolve()), profile=args.profile,
                                     config_file=args.config, participants=args.participants, rounds=args.rounds,
                                     local_epochs=args.local_epochs, algorithm=args.algorithm, mu=args.mu,
                                     pretrained=args.pretrained)
    print(federated_markdown(result))
    return result


if __name__ == "__main__":
    main()
