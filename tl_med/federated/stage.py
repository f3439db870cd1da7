"""The federated pretraining stage: the sites train one network together on NVFlare (simulator),
each on its own data; the global model is evaluated by each site on its own test split, logged
and registered as ``tlmed-<task>-federated`` (alias ``challenger``), ready for per-site adaptation
(``tl-med adapt --pretrained models:/tlmed-<task>-federated@challenger``).

MLflow layout: a parent run ``federated-<task>`` (params, the global model's weights, package and
pt2 model, the server's per-round metrics file, per-site test Dice) with one child run
``federated-<site>`` per site holding that site's per-round metrics as the server received them.

Example:
    >>> # result = federated_pretrain(ctx, {"north": ws.site_manifest("north"),
    >>> #                                   "east": ws.site_manifest("east")}, FederatedConfig(rounds=2))
    >>> # result.weights_uri, result.site_dice
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from tl_med.config import flatten
from tl_med.errors import InputError
from tl_med.federated.config import FederatedConfig
from tl_med.federated.extra import require_nvflare
from tl_med.federated.job import (build_recipe, bytes_per_round, load_global_state, round_metrics, run_deployed,
                                  simulate, write_initial, write_settings)
from tl_med.federated.provision import check_startup_kit
from tl_med.inference import Predictor, evaluate_native
from tl_med.manifests import manifest_hash
from tl_med.models.zoo import build_network, resolve_device
from tl_med.stages.common import StageContext, check_trainable, input_example, model_spec, run_tags
from tl_med.tracking import registered_model_name

__all__ = ["FEDERATED", "FederatedResult", "federated_pretrain", "federated_model_name"]

FEDERATED = "federated"  # the "site" of the federation's model in names and tags


@dataclass(frozen=True)
class FederatedResult:
    run_id: str
    weights_uri: str
    model_name: str
    model_version: str
    sites: tuple[str, ...]
    rounds: int
    algorithm: str
    test_dice: float  # over every site's test cases
    site_dice: dict[str, float] = field(default_factory=dict)
    site_runs: dict[str, str] = field(default_factory=dict)
    bytes_per_round: int = 0
    seconds: float = 0.0
    job_folder: str = ""

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.model_version}"


def federated_model_name(task: str) -> str:
    return registered_model_name(task, FEDERATED)


def _initial(ctx: StageContext, path: Path, pretrained: str | None) -> Path:
    if not pretrained:
        return write_initial(ctx.cfg, path)
    from tl_med.models.pretrained import load_state, transfer_weights

    model = build_network(ctx.cfg.network)
    transfer_weights(model, load_state(pretrained, ctx.tracker, ctx.ws)).require(
        ctx.cfg.adapt.min_transfer_share, pretrained)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def _log_rounds(ctx: StageContext, run_id: str, rounds: list[dict], sites: list[str]) -> dict[str, str]:
    """The server's per-round records: aggregated metrics on the parent run, each site's on a child."""
    for record in rounds:
        ctx.tracker.log_metrics(run_id, {f"fed_{k}": v for k, v in record["aggregated"].items()}, step=record["round"])
    children = {}
    for site in sites:
        with ctx.tracker.run(f"{FEDERATED}-{site}", parent_run_id=run_id,
                             tags={**_child_tags(ctx), "site": site, "role": "federated-client"}) as child:
            for record in rounds:
                ctx.tracker.log_metrics(child, record["sites"].get(site, {}), step=record["round"])
        children[site] = child
    return children


def _child_tags(ctx: StageContext) -> dict[str, str]:
    return {"task": ctx.cfg.task, "trigger": ctx.trigger, "prefect_flow_run_id": ctx.flow_run_id, **ctx.extra_tags}


def _evaluate_sites(ctx: StageContext, model: torch.nn.Module, splits: dict[str, dict], spec) -> dict[str, tuple]:
    """Each site's test Dice of the global model on its own cases (in a deployment: at the site)."""
    predictor = Predictor(model, spec, resolve_device(ctx.cfg.device))
    out = {}
    for site, s in splits.items():
        metrics, _ = evaluate_native(predictor, s["test"], f"evaluate federated model on {site}")
        out[site] = (metrics.summary()["dice"], len(s["test"]))
    return out


def federated_pretrain(ctx: StageContext, manifests: dict[str, Path], fed: FederatedConfig, *,
                       folder: Path | None = None, pretrained: str | None = None) -> FederatedResult:
    """Train on every site of ``manifests`` (site → manifest) with FedAvg/FedProx in NVFlare's
    simulator; log, evaluate and register the global model (``challenger``).

    ``folder`` holds the job's files (default ``<workspace>/federated/<run id>``: the simulator's
    server and site folders, the settings and the initial weights; weights and metrics only).
    ``pretrained`` (any source :func:`tl_med.models.pretrained.load_state` reads) starts the
    federation from given weights instead of the seeded random network.
    """
    if len(manifests) < 2:
        raise InputError(f"federated pretraining needs at least two sites, got {sorted(manifests)}")
    require_nvflare()  # a flow run without the extra fails in one line
    if fed.startup_kit:
        check_startup_kit(fed.startup_kit)
    splits = {site: check_trainable(Path(m), site) for site, m in manifests.items()}
    sites = list(manifests)
    name = federated_model_name(ctx.cfg.task)
    first = Path(manifests[sites[0]])
    tags = {**run_tags(ctx, FEDERATED, first, role="federated", strategy=f"federated-{fed.algorithm}"),
            "manifest_sha256": ",".join(manifest_hash(Path(m)) for m in manifests.values()),
            "sites": ",".join(sites)}
    with ctx.tracker.run(f"{FEDERATED}-{ctx.cfg.task}", tags=tags) as run_id:
        job = Path(folder or ctx.ws.root / FEDERATED / run_id)
        ctx.tracker.log_params(run_id, {**flatten(ctx.cfg.model_dump(mode="json")),
                                        **flatten({"federated": fed.model_dump(mode="json")}),
                                        "sites": ",".join(sites), "pretrained": pretrained or "",
                                        **{f"n_train_{s}": len(v["training"]) for s, v in splits.items()}})
        for site, m in manifests.items():
            ctx.tracker.log_dataset(run_id, Path(m), manifest_hash(Path(m)), "train")
        settings = write_settings(ctx.cfg, fed, job / "settings.json", len(sites))
        recipe = build_recipe(ctx.cfg, fed, manifests, ctx.ws.cache, settings, name=f"tlmed-{ctx.cfg.task}-federated",
                              initial=_initial(ctx, job / "initial.pt", pretrained))
        if fed.startup_kit:
            outcome = run_deployed(recipe, Path(fed.startup_kit), fed.admin, job / "deployment", fed.timeout_s)
        else:
            outcome = simulate(recipe, sites, job / "simulator", fed.threads)
        rounds = round_metrics(outcome.server_folder)
        site_runs = _log_rounds(ctx, run_id, rounds, sites)
        for artifact in sorted(outcome.server_folder.glob("**/metrics/*.json*")):
            ctx.tracker.client.log_artifact(run_id, str(artifact), "federated")
        state = load_global_state(outcome.global_model)
        model = build_network(ctx.cfg.network)
        model.load_state_dict(state)
        spec = model_spec(ctx, FEDERATED, first)
        scores = _evaluate_sites(ctx, model, splits, spec)
        n_test = sum(n for _, n in scores.values())
        test_dice = sum(d * n for d, n in scores.values()) / n_test
        sent = bytes_per_round(state, len(sites))
        ctx.tracker.log_metrics(run_id, {"test_dice": test_dice, "bytes_per_round": float(sent),
                                         "federation_seconds": outcome.seconds,
                                         **{f"test_dice_{s}": d for s, (d, _) in scores.items()}})
        weights_uri = ctx.tracker.log_state_dict(run_id, model)
        package = ctx.tracker.log_package(run_id, model, spec)
        model_uri = ctx.tracker.log_model(run_id, model, input_example(spec))
        version = ctx.tracker.register(
            model_uri, name, run_id,
            tags={"test_dice": f"{test_dice:.4f}", "site": FEDERATED, "sites": ",".join(sites), "package": package,
                  "algorithm": fed.algorithm, "rounds": fed.rounds, "modality": spec.modality,
                  **{f"test_dice_{s}": f"{d:.4f}" for s, (d, _) in scores.items()}},
            description=f"Federated ({fed.algorithm}, {fed.rounds} rounds) over {', '.join(sites)}: "
                        f"test Dice {test_dice:.3f} on {n_test} cases across the sites.")
    return FederatedResult(run_id, weights_uri, name, version, tuple(sites), fed.rounds, fed.algorithm, test_dice,
                           {s: d for s, (d, _) in scores.items()}, site_runs, sent, outcome.seconds,
                           str(outcome.job_folder))
