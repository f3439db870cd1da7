"""``tl-med classify``: a case-level classifier adapted to one target site beside its baselines."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer
from pydantic import ValidationError
from rich.table import Table

from tl_med.catalogue import CLASSIFIER_STRATEGIES, CLASSIFIERS, STRATEGIES, describe
from tl_med.cli.common import (REPO_SITES, ConfigOpt, JsonOpt, ProfileOpt, SitesOpt, WorkspaceOpt, app, console,
                               first_error, load_config, with_adapt)
from tl_med.cli.output import emit_json, numeric_columns, print_table, progress_view
from tl_med.config import PipelineConfig
from tl_med.errors import TlMedError
from tl_med.workspace import resolve_workspace

_ROWS = {"source_only": "source-only", "source_adabn": "source + AdaBN (0 labels)",
         "from_scratch": "from scratch", "adapted": "adapted"}
_HEADERS = ("model", "AUC", "95% CI", "balanced acc", "ECE", "shortcut")


def _row(name: str, m: dict | None, shortcut: dict | None) -> tuple[str, ...]:
    if m is None:
        return (name, "-", "-", "-", "-", "-")
    def f(v):
        return "n/a" if v is None else f"{v:.3f}"
    ci = "n/a" if m["auc_low"] is None else f"{m['auc_low']:.2f}-{m['auc_high']:.2f}"
    flag = "-" if shortcut is None else ("FLAGGED" if shortcut["flagged"] else "no")
    return (name, f(m["auc"]), ci, f(m["balanced_accuracy"]), f(m["ece"]), flag)


def _with_classifier(cfg: PipelineConfig, **changes: str | None) -> PipelineConfig:
    """``cfg`` with classifier overrides (``None`` keeps a value); a bad one is one error line."""
    network = changes.get("network")
    if network is not None and network not in CLASSIFIERS:
        raise TlMedError(f"--network {network}: unknown classifier (known: {', '.join(CLASSIFIERS)})")
    given = {k: v for k, v in changes.items() if v is not None}
    try:
        return PipelineConfig.model_validate({**cfg.model_dump(), "classifier": {**cfg.classifier.model_dump(),
                                                                                 **given}})
    except ValidationError as exc:
        raise TlMedError(f"--network {network}: {first_error(exc, 'classifier')}") from None


@app.command()
def classify(site: Annotated[str, typer.Option("--site", help="Target site.")],
             strategy: Annotated[str, typer.Option(help=f"{describe({k: STRATEGIES[k] for k in CLASSIFIER_STRATEGIES})}.")] = "finetune",
             network: Annotated[Optional[str], typer.Option(
                 "--network", help=f"Classifier: {describe(CLASSIFIERS)} (default: the config's).")] = None,
             labels: Annotated[Optional[int], typer.Option("--labels", help="Labelled target cases (their classes) "
                                                           "to use (default: the training split; 0: none).")] = None,
             pretrained: Annotated[Optional[str], typer.Option(
                 "--pretrained", help="Start the source classifier from this local checkpoint (e.g. MedicalNet "
                 "ResNet weights with --network ResNet18).")] = None,
             workspace: WorkspaceOpt = None, sites: SitesOpt = REPO_SITES, profile: ProfileOpt = "demo",
             config: ConfigOpt = None, seed: Optional[int] = None, as_json: JsonOpt = False) -> None:
    """Classify the task's case-level classes (sites.yaml `classes:`): train a MONAI classifier on the
    source site, adapt it to SITE with the labelled cases, and compare AUC (with its 95% bootstrap
    interval), balanced accuracy and calibration with source-only, AdaBN and from-scratch, on
    SITE's test split; each model gets a shortcut check against scanner metadata."""
    from tl_med.ingest.site import ingest_site
    from tl_med.sites import load_sites
    from tl_med.stages.classification import MODELS, check_strategy, classify_site
    from tl_med.stages.common import StageContext
    from tl_med.tracking import Tracker

    check_strategy(strategy)
    ws = resolve_workspace(workspace).ensure()
    registry = load_sites(sites, ws.root)
    target = registry.get(site)
    if target.role == "source":
        raise TlMedError(f"site '{site}' is the source site; pick a target site "
                         f"({', '.join(t.name for t in registry.targets)})")
    base = load_config(profile, config, seed).with_task(registry.task)
    cfg = _with_classifier(with_adapt(base, strategy=strategy, n_labelled=labels), network=network,
                           pretrained=pretrained)
    start = time.perf_counter()
    with progress_view():
        for s in (registry.source, target):  # incremental: unchanged inputs are not converted again
            ingest_site(s, ws, **registry.task_fields())
        ctx = StageContext(ws=ws, cfg=cfg, tracker=Tracker(ws.tracking_uri, f"tlmed-{cfg.task}", ws.artifact_root))
        result = classify_site(ctx, site, ws.site_manifest(site), registry.source.name,
                               ws.site_manifest(registry.source.name))
    seconds = time.perf_counter() - start
    if as_json:
        from dataclasses import asdict

        import tl_med

        emit_json({"schema": "tl_med.classify/1", "command": "classify", "tl_med_version": tl_med.__version__,
                   **asdict(result), "seconds": round(seconds, 1),
                   "workspace": str(ws.root), "mlflow_tracking_uri": ws.tracking_uri})
        return
    table = Table(title=f"Case-level classification of {site} (its test split)")
    for h in _HEADERS:
        table.add_column(h, justify="left" if h in ("model", "shortcut", "95% CI") else "right")
    rows = [_row(_ROWS[m], result.metrics[m], result.shortcut.get(m)) for m in MODELS]
    numeric_columns(table, ("AUC", "balanced acc", "ECE"), rows)
    for r in rows:
        table.add_row(*r)
    print_table(table)
    console.print(f"{result.network}; adapted: {result.strategy} from {result.source}'s classifier; "
                  f"{result.n_labelled} labelled cases, {result.n_test} test cases; classes: "
                  f"{', '.join(result.classes)}", markup=False)
    if result.source_auc is not None:
        console.print(f"source classifier on {result.source}'s test split: AUC {result.source_auc:.3f}"
                      + (f"; forgetting after adapting: {result.forgetting:+.3f}" if result.forgetting is not None
                         else ""), markup=False)
    if result.negative_transfer:
        console.print(f"NEGATIVE TRANSFER: {result.negative_transfer}", markup=False)
    for m, s in result.shortcut.items():
        if s["flagged"]:
            console.print(f"SHORTCUT ({_ROWS[m]}): {s['reason']}", markup=False)
    for line in result.notes:
        console.print(f"note: {line}", markup=False)
    console.print(f"Finished in {seconds:.0f} s; MLflow parent run {result.parent_run_id} (tl-med ui --workspace "
                  f"{ws.root})", markup=False)
