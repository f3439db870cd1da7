"""What every command shares: the Typer app, the console, common options and config helpers."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from tl_med.config import PipelineConfig
from tl_med.errors import TlMedError
from tl_med.workspace import Workspace

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Per-site transfer learning for medical-image segmentation.")
console = Console(width=max(shutil.get_terminal_size((140, 24)).columns, 140))

REPO_MANIFESTS = Path(__file__).resolve().parents[2] / "data_manifests"
REPO_SITES = REPO_MANIFESTS / "sites.yaml"

WorkspaceOpt = Annotated[Optional[Path], typer.Option("--workspace", "-w", help="Workspace root "
                         "(default: $TL_MED_HOME or ./tlmed-workspace).")]
SitesOpt = Annotated[Path, typer.Option("--sites", help="Site registry (sites.yaml).")]
ProfileOpt = Annotated[str, typer.Option("--profile", help="Config preset: demo or tiny.")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="Pipeline config YAML "
                      "(overrides --profile).")]


def load_config(profile: str, config: Path | None, seed: int | None) -> PipelineConfig:
    cfg = PipelineConfig.from_yaml(config) if config else PipelineConfig.profile(profile)
    return cfg.model_copy(update={"seed": seed}) if seed is not None else cfg


def parse_steps(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(s.strip() for s in text.split(",") if s.strip())


def with_adapt(cfg: PipelineConfig, *, norm: str | None = None, **adapt: object) -> PipelineConfig:
    """``cfg`` with adapt overrides (``None`` keeps a value); a bad combination is one error line."""
    try:
        changes = {k: v for k, v in adapt.items() if v is not None}
        if "n_labelled" in adapt and adapt["n_labelled"] is None:
            changes["n_labelled"] = None
        network = cfg.network.model_copy(update={"norm": norm}) if norm else cfg.network
        return PipelineConfig.model_validate({**cfg.model_dump(), "adapt": {**cfg.adapt.model_dump(), **changes},
                                              "network": network.model_dump()})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise TlMedError(f"{'.'.join(map(str, err['loc'])) or 'adapt'}: {err['msg']}") from None


def print_results(outcome, ws: Workspace, seconds: float) -> None:
    from tl_med.results import HEADERS, result_rows, source_line

    console.print("\n" + source_line(outcome))
    table = Table(title="Per-site adaptation (test split of each target site)")
    for h in HEADERS:
        table.add_column(h, justify="right" if "Dice" in h or h in ("gain", "forgetting") else "left",
                         no_wrap=h in ("strategy", "model version", "MLflow run id"))
    for row in result_rows(outcome.sites):
        table.add_row(*row)
    console.print(table)
    console.print("forgetting: the source site's test Dice lost by adapting; negative transfer: adapted Dice "
                  "below source-only or from-scratch by more than adapt.negative_transfer_margin")
    console.print(f"Finished in {seconds:.0f} s. Workspace: {ws.root}")
    console.print("\nExplore the runs:")
    if ws.uses_embedded_mlflow:
        console.print(f"  MLflow UI:  tl-med ui --workspace {ws.root}   (then open http://127.0.0.1:5000)")
        console.print(f"          or  mlflow ui --backend-store-uri {ws.tracking_uri} --host 127.0.0.1 --port 5000")
    else:
        console.print(f"  MLflow UI:  {ws.tracking_uri}")
    if not os.environ.get("PREFECT_API_URL"):
        console.print(f"  Prefect UI: PREFECT_HOME={ws.prefect_home} prefect server start   "
                      "(then open http://127.0.0.1:4200)")


def run_pipeline(ws: Workspace, sites_file: Path, cfg: PipelineConfig, targets: list[str] | None,
                  trigger: str, pretrained: str | None = None) -> None:
    from tl_med.sites import load_sites

    sites = load_sites(sites_file, ws.root)  # validate names before any server or run starts
    chosen = [sites.get(t) for t in targets] if targets else sites.targets
    for s in chosen:
        if s.role == "source":
            known = ", ".join(t.name for t in sites.targets)
            raise TlMedError(f"site '{s.name}' is the source site; pick a target site ({known})")
    for s in [sites.source, *chosen]:
        if s.dicom_dir is not None and (not s.dicom_dir.is_dir() or not any(s.dicom_dir.rglob("*"))):
            raise TlMedError(f"site '{s.name}': DICOM folder {s.dicom_dir} is missing or empty")
    ws.activate()
    from flows.pipeline import site_adaptation_pipeline  # Prefect is imported after PREFECT_HOME is set

    start = time.perf_counter()
    state = site_adaptation_pipeline(workspace=str(ws.root), sites_file=str(sites_file.resolve()),
                                     config=cfg.model_dump(mode="json"), targets=targets, trigger=trigger,
                                     pretrained=pretrained, return_state=True)
    outcome = state.result()  # raises the flow's error if it failed
    print_results(outcome, ws, time.perf_counter() - start)
    if state.message:
        console.print(f"Flow run: {state.message} (see `tl-med ingest --site <name>` or the ingest "
                      f"artifacts in the Prefect UI for why)", markup=False)


