"""What every command shares: the Typer app, the console, common options and config helpers."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from pydantic import ValidationError
from rich.table import Table

from tl_med.catalogue import NETWORKS, ZERO_LABEL_STEPS
from tl_med.cli.orchestrator import prepare_prefect
from tl_med.cli.output import emit_json, numeric_columns, out, print_table, progress_view
from tl_med.config import PipelineConfig
from tl_med.errors import TlMedError
from tl_med.workspace import Workspace

if TYPE_CHECKING:
    from prefect.states import State

    from tl_med.results import PipelineResult

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Per-site transfer learning for medical-image segmentation.")
console = out  # results; status lines and progress go to output.err (stderr)

REPO_MANIFESTS = Path(__file__).resolve().parents[2] / "data_manifests"
REPO_SITES = REPO_MANIFESTS / "sites.yaml"

WorkspaceOpt = Annotated[Optional[Path], typer.Option("--workspace", "-w", help="Workspace root "
                         "(default: $TL_MED_HOME or ./tlmed-workspace).")]
SitesOpt = Annotated[Path, typer.Option("--sites", help="Site registry (sites.yaml).")]
ProfileOpt = Annotated[str, typer.Option("--profile", help="Config preset: demo (4 mm, 2 CPU cores), tiny "
                        "(tests) or realistic (1.5-2 mm, 96³ patches: a GPU).")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="Pipeline config YAML "
                      "(overrides --profile).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of "
                    "the table (schema in the README); progress still goes to stderr.")]
NetworkOpt = Annotated[Optional[str], typer.Option("--network", help="Network: " + ", ".join(
    n for n in NETWORKS if n != "bundle") + " (sizes fitted to it; a bundle's network_def: network.name bundle in "
    "a --config file).")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Also show Prefect's per-task log lines.")]


def load_config(profile: str, config: Path | None, seed: int | None, network: str | None = None) -> PipelineConfig:
    cfg = PipelineConfig.from_yaml(config) if config else PipelineConfig.profile(profile)
    if network:
        try:
            cfg = cfg.with_network(network)
        except ValidationError as exc:
            raise TlMedError(f"--network {network}: {first_error(exc, 'network')}") from None
        except ValueError as exc:
            raise TlMedError(f"--network {network}: {exc}") from None
    return cfg.model_copy(update={"seed": seed}) if seed is not None else cfg


def parse_steps(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(s.strip() for s in text.split(",") if s.strip())


def adapt_steps(cfg: PipelineConfig, text: str | None, labels: int | None) -> tuple[str, ...] | None:
    """The steps a command asked for (``None``: the config's); with zero labels and no steps
    anywhere, the zero-label recipe of :data:`tl_med.catalogue.ZERO_LABEL_STEPS`."""
    chosen = parse_steps(text)
    if chosen is None and labels == 0 and not cfg.adapt.steps:
        return ZERO_LABEL_STEPS
    return chosen


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
        raise TlMedError(first_error(exc, "adapt")) from None


def first_error(exc: ValidationError, where: str) -> str:
    """``field.path: message`` of a validation error's first problem (one line for the user)."""
    first = exc.errors()[0]
    return f"{'.'.join(map(str, first['loc'])) or where}: {first['msg']}"


def print_results(outcome: PipelineResult, ws: Workspace, seconds: float) -> None:
    """The comparison table (stdout) and where to look next."""
    from tl_med.results import (HEADERS, NUMERIC, challenger_lines, class_lines, classification_lines, result_rows,
                                source_line)

    console.print("\n" + source_line(outcome), markup=False)
    rows = result_rows(outcome.sites)
    table = Table(title="Per-site adaptation (test split of each target site)")
    for h in HEADERS:
        table.add_column(h, justify="right" if h in NUMERIC else "left", overflow="fold")
    numeric_columns(table, NUMERIC, rows)
    for row in rows:
        table.add_row(*row)
    print_table(table)
    per_class = class_lines(outcome.sites)
    if per_class:
        console.print("Test Dice per class:\n  " + "\n  ".join(per_class), markup=False)
    for line in classification_lines(outcome.sites) + challenger_lines(outcome.sites):
        console.print(line, markup=False)
    console.print("forgetting: the source site's test Dice lost by adapting; negative transfer: adapted Dice "
                  "below source-only or from-scratch by more than adapt.negative_transfer_margin", markup=False)
    console.print(f"Finished in {seconds:.0f} s. Workspace: {ws.root}", markup=False)
    console.print("\nExplore the runs:")
    if ws.uses_embedded_mlflow:
        console.print(f"  MLflow UI:  tl-med ui --workspace {ws.root}   (then open the address it prints)", markup=False)
    else:
        console.print(f"  MLflow UI:  {ws.tracking_uri}", markup=False)
    if not os.environ.get("PREFECT_API_URL"):
        console.print(f"  Prefect UI: PREFECT_HOME={ws.prefect_home} prefect server start   "
                      "(then open http://127.0.0.1:4200)", markup=False)


def _flow_run(state: State) -> dict[str, str]:
    details = getattr(state, "state_details", None)
    run_id = str(getattr(details, "flow_run_id", "") or "")
    return {"id": run_id, "state": state.type.value if state.type else "", "message": state.message or ""}


def report_outcome(outcome: PipelineResult, state: State, ws: Workspace, seconds: float, *, command: str,
                   as_json: bool) -> None:
    """The result of a pipeline command: the table, or one JSON document with ``--json``."""
    if as_json:
        from tl_med.results import result_document

        emit_json(result_document(outcome, command=command, flow_run=_flow_run(state), workspace=str(ws.root),
                                  mlflow_tracking_uri=ws.tracking_uri, seconds=round(seconds, 1)))
        return
    print_results(outcome, ws, seconds)
    if state.message:
        console.print(f"Flow run: {state.message} (see `tl-med ingest --site <name>` or the ingest "
                      f"artifacts in the Prefect UI for why)", markup=False)


def run_pipeline(ws: Workspace, sites_file: Path, cfg: PipelineConfig, targets: list[str] | None,
                 trigger: str, pretrained: str | None = None, *, command: str = "run", as_json: bool = False,
                 verbose: bool = False, alternates: list[str] | None = None) -> None:
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
    prepare_prefect(ws, verbose=verbose)
    from flows.pipeline import site_adaptation_pipeline  # Prefect is imported after PREFECT_HOME is set

    start = time.perf_counter()
    with progress_view():
        state = site_adaptation_pipeline(workspace=str(ws.root), sites_file=str(sites_file.resolve()),
                                         config=cfg.model_dump(mode="json"), targets=targets, trigger=trigger,
                                         pretrained=pretrained, alternates=alternates, return_state=True)
        outcome = state.result()  # raises the flow's error if it failed
    report_outcome(outcome, state, ws, time.perf_counter() - start, command=command, as_json=as_json)
