"""``tl-med federated``: pretrain one network across sites with NVFlare; only weights leave a site."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from tl_med.cli.common import (REPO_SITES, ConfigOpt, JsonOpt, ProfileOpt, SitesOpt, VerboseOpt, WorkspaceOpt, app,
                               console, load_config)
from tl_med.cli.orchestrator import prepare_prefect
from tl_med.cli.output import emit_json, print_table, progress_view
from tl_med.errors import TlMedError
from tl_med.workspace import resolve_workspace

@app.command()
def federated(site: Annotated[Optional[list[str]], typer.Option(
                  "--site", help="A participating site (repeat; default: every site in the registry).")] = None,
              rounds: Annotated[int, typer.Option(min=1, help="Federated rounds.")] = 2,
              local_epochs: Annotated[int, typer.Option(min=1, help="Epochs each site trains per round.")] = 1,
              algorithm: Annotated[str, typer.Option(help="fedavg, or fedprox (needs --mu).")] = "fedavg",
              mu: Annotated[float, typer.Option(min=0.0, help="FedProx's proximal coefficient.")] = 0.0,
              privacy: Annotated[str, typer.Option(
                  help="none, or percentile: each site sends only the largest entries of its update, clipped "
                  "(NVFlare's PercentilePrivacy).")] = "none",
              pretrained: Annotated[Optional[str], typer.Option(
                  "--pretrained", help="Start the federation from these weights (a MONAI bundle, a checkpoint "
                  "or models:/<name>@<alias>) instead of a seeded random network.")] = None,
              startup_kit: Annotated[Optional[Path], typer.Option(
                  "--startup-kit", help="Run on a provisioned NVFlare deployment instead of the simulator: the "
                  "admin's startup kit folder (its server and one client per site must be running; "
                  "see README).")] = None,
              admin: Annotated[str, typer.Option(help="The admin user of --startup-kit.")] = "admin@nvidia.com",
              workspace: WorkspaceOpt = None, sites: SitesOpt = REPO_SITES, profile: ProfileOpt = "demo",
              config: ConfigOpt = None, seed: Optional[int] = None,
              trigger: str = typer.Option("manual", help="Recorded as the runs' trigger tag."),
              as_json: JsonOpt = False, verbose: VerboseOpt = False) -> None:
    """Pretrain across sites with NVFlare (FedAvg or FedProx; its simulator, or a provisioned deployment
    with --startup-kit): each site trains on its own ingested, de-identified data and sends only
    weights; the global model is registered as tlmed-<task>-federated (alias challenger) with every
    site's per-round metrics. Adapt a site from it with
    `tl-med adapt --site S --pretrained models:/tlmed-<task>-federated@challenger`."""
    from pydantic import ValidationError

    from tl_med.federated import FederatedConfig, require_nvflare
    from tl_med.sites import load_sites

    try:
        fed = FederatedConfig(rounds=rounds, local_epochs=local_epochs, mu=mu, admin=admin,
                              algorithm=_choice("--algorithm", algorithm, ("fedavg", "fedprox")),
                              privacy=_choice("--privacy", privacy, ("none", "percentile")),
                              startup_kit=str(startup_kit.resolve()) if startup_kit else None)
    except ValidationError as exc:
        raise TlMedError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    ws = resolve_workspace(workspace).ensure()
    registry = load_sites(sites, ws.root)
    names = [registry.get(s).name for s in site] if site else [s.name for s in registry.sites]
    if len(set(names)) < 2:
        raise TlMedError(f"federated pretraining needs at least two sites (got {', '.join(names)})")
    for s in map(registry.get, names):
        if s.dicom_dir is not None and (not s.dicom_dir.is_dir() or not any(s.dicom_dir.rglob("*"))):
            raise TlMedError(f"site '{s.name}': DICOM folder {s.dicom_dir} is missing or empty")
    if startup_kit is not None:
        from tl_med.federated.provision import check_startup_kit

        check_startup_kit(startup_kit)
    require_nvflare()
    cfg = load_config(profile, config, seed)
    prepare_prefect(ws, verbose=verbose)
    from flows.federated import federated_pretrain_flow  # Prefect is imported after PREFECT_HOME is set

    start = time.perf_counter()
    with progress_view():
        state = federated_pretrain_flow(str(ws.root), str(sites.resolve()), config=cfg.model_dump(mode="json"),
                                        participants=names, rounds=fed.rounds, local_epochs=fed.local_epochs,
                                        algorithm=fed.algorithm, mu=fed.mu, trigger=trigger, pretrained=pretrained,
                                        startup_kit=fed.startup_kit, admin=fed.admin, privacy=fed.privacy,
                                        return_state=True)
        result = state.result()  # raises the flow's error if it failed
    _report(result, ws, time.perf_counter() - start, as_json)


def _choice(option: str, value: str, known: tuple[str, ...]) -> str:
    if value not in known:
        raise TlMedError(f"{option} {value}: unknown (known: {', '.join(known)})")
    return value


def _report(result, ws, seconds: float, as_json: bool) -> None:
    if as_json:
        from dataclasses import asdict

        import tl_med

        emit_json({"schema": "tl_med.federated/1", "command": "federated", "tl_med_version": tl_med.__version__,
                   **asdict(result), "model_uri": result.model_uri,
                   "seconds": round(seconds, 1), "workspace": str(ws.root), "mlflow_tracking_uri": ws.tracking_uri})
        return
    console.print(f"Federated pretraining ({result.algorithm}, {result.rounds} rounds): the global model's test Dice",
                  markup=False)
    table = Table()
    table.add_column("site")
    table.add_column("test Dice", justify="right")
    for name, dice in result.site_dice.items():
        table.add_row(name, f"{dice:.3f}")
    table.add_row("all", f"{result.test_dice:.3f}")
    print_table(table)
    console.print(f"registered {result.model_name} v{result.model_version} (challenger); "
                  f"{result.bytes_per_round / 1e6:.2f} MB of weights per round; finished in {seconds:.0f} s",
                  markup=False)
    console.print(f"adapt a site from it: tl-med adapt --site <name> --workspace {ws.root} "
                  f"--pretrained models:/{result.model_name}@challenger", markup=False)
