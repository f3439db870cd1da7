"""The NVFlare job of a federated pretraining, built with NVFlare's recipe API and run in its
simulator (one client per site, the server in its own folder).

``build_recipe`` gives a PyTorch ``FedAvgRecipe`` (or ``FedProxRecipe``) whose client in each site
runs :mod:`tl_med.federated.client` on that site's manifest only; the sites' metrics go to MLflow
through NVFlare's ``MLflowReceiver`` on the server. ``simulate`` runs it with ``SimEnv`` and
returns where the global model and the job's files are.

Example:
    >>> # recipe = build_recipe(cfg, fed, {"north": north_json, "east": east_json}, ws.cache, folder)
    >>> # outcome = simulate(recipe, list(sites), folder / "sim")
    >>> # outcome.global_model  # .../server/simulate_job/app_server/FL_global_model.pt
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from tl_med.config import PipelineConfig
from tl_med.federated.config import FederatedConfig
from tl_med.errors import InputError
from tl_med.models.zoo import build_network, network_arguments
from tl_med.train import seed_everything

__all__ = ["CLIENT_SCRIPT", "JobOutcome", "model_definition", "write_settings", "write_initial", "build_recipe",
           "simulate", "run_deployed", "round_metrics", "load_global_state", "bytes_per_round"]

CLIENT_SCRIPT = Path(__file__).with_name("client.py")
GLOBAL_MODEL = "FL_global_model.pt"
CONSOLE_LOG = "nvflare-console.log"  # what NVFlare printed, beside the job folders


@dataclass(frozen=True)
class JobOutcome:
    """Where a finished job's files are: ``job_folder`` is the simulator's workspace of the job (server
    plus one folder per site) or the result copied from a deployment; ``server_folder`` is the
    server's workspace of the job inside it (global model, ``metrics/round_metrics.jsonl``)."""

    job_folder: Path
    server_folder: Path
    global_model: Path
    seconds: float


def write_settings(cfg: PipelineConfig, fed: FederatedConfig, path: Path, n_sites: int) -> Path:
    """The settings every client reads (no data, no secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pipeline": cfg.model_dump(mode="json"), "federated": fed.model_dump(mode="json"),
                                "concurrent_sites": min(fed.threads or n_sites, n_sites)}, indent=1))
    return path


def write_initial(cfg: PipelineConfig, path: Path) -> Path:
    """The starting global weights, built here with the pipeline's seed (the server's own build
    would be unseeded)."""
    seed_everything(cfg.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(build_network(cfg.network).state_dict(), path)
    return path


def model_definition(cfg: PipelineConfig) -> dict:
    """The network as NVFlare's persistor builds it on the server: class path and arguments (a
    module instance would be re-created from its attributes, which loses arguments)."""
    if cfg.network.name == "bundle":
        raise InputError("federated pretraining builds catalogue networks only, not a bundle's network_def")
    return {"class_path": f"monai.networks.nets.{cfg.network.name}",
            "args": json.loads(json.dumps(network_arguments(cfg.network)))}


def build_recipe(cfg: PipelineConfig, fed: FederatedConfig, manifests: dict[str, Path], cache: Path,
                 settings: Path, *, name: str, initial: Path | None = None):
    """A FedAvg/FedProx recipe over ``manifests`` (site → its manifest), starting from the state
    dict ``initial`` (absolute path) when given. Each site's client gets only its own manifest."""
    from nvflare.app_opt.pt.recipes.fedavg import FedAvgRecipe
    from nvflare.app_opt.pt.recipes.fedprox import FedProxRecipe
    from nvflare.client.config import TransferType

    private = fed.privacy == "percentile"  # sites send updates (weight differences), which the filter thins
    common = dict(name=name, model=model_definition(cfg), min_clients=len(manifests), num_rounds=fed.rounds,
                  train_script=str(CLIENT_SCRIPT), key_metric="global_val_dice",
                  initial_ckpt=str(Path(initial).resolve()) if initial else None,
                  params_transfer_type=TransferType.DIFF if private else TransferType.FULL)
    if fed.algorithm == "fedprox":
        recipe = FedProxRecipe(**common, fedprox_mu=fed.mu)
    else:
        recipe = FedAvgRecipe(**common)
    recipe.set_per_site_config({
        site: {"train_args": shlex.join(["--manifest", str(Path(m).resolve()), "--cache", str(Path(cache).resolve()),
                                         "--config", str(Path(settings).resolve())])}
        for site, m in manifests.items()})
    if private:
        from nvflare.app_common.filters.percentile_privacy import PercentilePrivacy

        recipe.add_client_output_filter(PercentilePrivacy(percentile=fed.privacy_percentile, gamma=fed.privacy_gamma),
                                        tasks=["train"])
    return recipe


@contextmanager
def _stdout_to(path: Path) -> Iterator[None]:
    """Send file descriptor 1 (this process's and the simulator's client processes') to ``path``:
    NVFlare logs every round to the console, which would bury the command's output (and break
    ``--json``); its own per-job ``log.txt`` files keep the same lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 1)
            try:
                yield
            finally:
                sys.stdout.flush()
                os.dup2(saved, 1)
    finally:
        os.close(saved)


def simulate(recipe, sites: list[str], workspace_root: Path, threads: int | None = None) -> JobOutcome:
    """Run ``recipe`` in NVFlare's simulator with one client per site; raises if the job fails."""
    from nvflare.recipe.sim_env import SimEnv

    start = time.perf_counter()
    env = SimEnv(clients=list(sites), num_threads=min(threads or len(sites), len(sites)),
                 workspace_root=str(workspace_root))
    with _stdout_to(Path(workspace_root) / CONSOLE_LOG):
        run = recipe.run(env)
        folder = Path(run.get_result(clean_up=False) or workspace_root / run.get_job_id())
    return _outcome(folder, folder / "server", time.perf_counter() - start, f"{folder}/server/simulate_job/log.txt")


def run_deployed(recipe, startup_kit: Path, admin: str, folder: Path, timeout: float) -> JobOutcome:
    """Submit ``recipe`` to a running NVFlare deployment (server and one client per site, provisioned
    with ``nvflare provision``) as the admin whose startup kit is ``startup_kit`` (NVFlare's
    ``ProdEnv``); wait for it and copy its result (server workspace, global model, metrics) into
    ``folder``. A job that does not complete raises an :class:`InputError` naming its status."""
    import shutil

    from nvflare.recipe.prod_env import ProdEnv

    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    with _stdout_to(folder / CONSOLE_LOG):
        run = recipe.run(ProdEnv(startup_kit_location=str(startup_kit), username=admin, login_timeout=30))
        result = run.get_result(timeout=timeout, clean_up=False)
        status = run.get_status() or "unknown"
    if not result or not status.startswith("FINISHED:COMPLETED"):
        raise InputError(f"federated job {run.get_job_id()} on the NVFlare deployment of {startup_kit} ended "
                         f"{status}: see the server's log (nvflare job logs, or <server>/{run.get_job_id()}/log.txt)")
    copy = folder / Path(result).name
    shutil.copytree(result, copy, dirs_exist_ok=True)
    return _outcome(copy, copy / "workspace", time.perf_counter() - start, f"{copy}/workspace/log.txt")


def _outcome(job_folder: Path, server_folder: Path, seconds: float, log: str) -> JobOutcome:
    models = sorted(m for m in server_folder.glob(f"**/{GLOBAL_MODEL}") if m.name == GLOBAL_MODEL)
    if not models:
        raise RuntimeError(f"the federated job left no global model ({GLOBAL_MODEL}) under {server_folder}; "
                           f"its log: {log}")
    return JobOutcome(job_folder, server_folder, models[0], seconds)


def round_metrics(server_folder: Path) -> list[dict]:
    """What the server collected from the sites, one record per round: ``{"round", "aggregated":
    {name: value}, "sites": {site: {name: value}}}`` (NVFlare's ``metrics/round_metrics.jsonl``)."""
    files = sorted(Path(server_folder).glob("**/metrics/round_metrics.jsonl"))
    if not files:
        return []
    rounds = []
    for line in files[0].read_text().splitlines():
        if line.strip():
            raw = json.loads(line)
            rounds.append({"round": int(raw["round"]),
                           "aggregated": {m["name"]: m["value"] for m in raw.get("aggregated_metrics", [])},
                           "sites": {s["name"]: {m["name"]: m["value"] for m in s.get("metrics", [])}
                                     for s in raw.get("sites", [])}})
    return rounds


def load_global_state(path: Path) -> dict[str, torch.Tensor]:
    """The global weights NVFlare's PyTorch persistor saved (``{"model": state_dict, ...}``)."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    state = saved.get("model", saved) if isinstance(saved, dict) else saved
    return {k: torch.as_tensor(v) for k, v in state.items()}


def bytes_per_round(state: dict[str, torch.Tensor], n_sites: int) -> int:
    """Weights sent in one round: the global model down to each site and each site's model back up."""
    return 2 * n_sites * sum(t.numel() * t.element_size() for t in state.values())
