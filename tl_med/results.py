"""The per-site comparison, as table rows, as Markdown (Prefect artifact, MLflow) and as the JSON
document scripts read (``tl-med run --json``; its schema is documented in the README).

Example:
    >>> outcome = PipelineResult(source=None, sites=[], pretrained="start.pt")
    >>> result_document(outcome, command="run")["schema"]
    'tl_med.result/1'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import tl_med
from tl_med.stages import PretrainResult, SiteResult

__all__ = ["PipelineResult", "HEADERS", "NUMERIC", "result_rows", "class_lines", "classification_lines",
           "challenger_lines", "results_markdown", "source_line", "result_document", "RESULT_SCHEMA"]

RESULT_SCHEMA = "tl_med.result/1"
HEADERS = ("site", "strategy", "labels", "source-only Dice", "from-scratch Dice", "adapted Dice", "gain",
           "adapted HD95 mm", "forgetting", "negative transfer", "model version")
NUMERIC = ("labels", "source-only Dice", "from-scratch Dice", "adapted Dice", "gain", "adapted HD95 mm",
           "forgetting")


@dataclass(frozen=True)
class PipelineResult:
    """What one pipeline execution produced: the source model and one result per target site."""

    source: PretrainResult | None  # None when adaptation started from a given pretrained source
    sites: list[SiteResult]
    pretrained: str = ""
    alternate: PretrainResult | None = None  # the second source (pretrain.alternate), when one was trained


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def result_rows(results: list[SiteResult]) -> list[tuple[str, ...]]:
    return [(r.site, r.strategy, str(r.n_labelled), _fmt(r.source_only_dice), _fmt(r.scratch_dice),
             _fmt(r.adapted_dice), f"{r.gain:+.3f}", _fmt(r.adapted_hd95, 1), _fmt(r.forgetting),
             "YES" if r.negative_transfer else "no",
             f"{r.model_name} v{r.model_version}" + ("" if r.challenger else " (not challenger)")) for r in results]


def challenger_lines(results: list[SiteResult]) -> list[str]:
    """One line per site whose new version did not take ``challenger``, with the reason."""
    return [f"{r.site}: {r.model_name} v{r.model_version} is a candidate, not the challenger: {r.challenger_reason}"
            for r in results if not r.challenger]


def source_line(outcome: PipelineResult) -> str:
    """Where adaptation started from, in one line."""
    src = outcome.source
    if src is None:
        return f"Pretrained source: {outcome.pretrained}"
    alt = outcome.alternate
    return (f"Source model {src.model_name} v{src.model_version}: test Dice {src.test_dice:.3f} at site "
            f"{src.site} (run {src.run_id})"
            + ("" if alt is None else f"; alternate source v{alt.model_version}: test Dice {alt.test_dice:.3f}"))


def classification_lines(results: list[SiteResult]) -> list[str]:
    """A multi-task site's case-level classification by each model, one line per site."""
    def one(m: dict | None, why: str) -> str:
        if not m:
            return f"n/a ({why})"
        if m.get("auc") is None:
            return f"n/a ({int(m.get('n_cases') or 0)} test cases with a class, not every class present)"
        return f"{m['auc']:.2f} (95% CI {m['auc_low']:.2f}-{m['auc_high']:.2f})"

    return [f"{r.site} case-level AUC: source-only {one(c.get('source_only'), 'no class head')}, from scratch "
            f"{one(c.get('from_scratch'), 'not run')}, adapted {one(c.get('adapted'), 'not run')}"
            + (f"; adapted balanced accuracy {c['adapted']['balanced_accuracy']:.2f}, ECE {c['adapted']['ece']:.2f}"
               if c.get("adapted") and c["adapted"].get("balanced_accuracy") is not None else "")
            for r in results if (c := r.classification)]


def class_lines(results: list[SiteResult]) -> list[str]:
    """One line per class of each multi-class site: its test Dice for each model."""
    return [f"{r.site} · {name}: source-only {_fmt(d['source_only'])}, from scratch {_fmt(d['from_scratch'])}, "
            f"adapted {_fmt(d['adapted'])}" for r in results for name, d in r.class_dice.items()]


def results_markdown(outcome: PipelineResult) -> str:
    """Markdown: the source model's line, then one row per target site (and per class of a
    multi-class task)."""
    lines = [source_line(outcome) + ".", "",
             "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in result_rows(outcome.sites)]
    per_class = class_lines(outcome.sites)
    if per_class:
        lines += ["", "Test Dice per class:", ""] + [f"- {line}" for line in per_class]
    classification = classification_lines(outcome.sites)
    if classification:
        lines += [""] + [f"- {line}" for line in classification]
    refused = challenger_lines(outcome.sites)
    if refused:
        lines += [""] + [f"- {line}" for line in refused]
    return "\n".join(lines) + "\n"


def _num(v: float | None) -> float | None:
    """JSON-safe: ``None`` for missing or non-finite values (JSON has no NaN)."""
    return None if v is None or not math.isfinite(v) else round(float(v), 6)


def _site_document(r: SiteResult) -> dict[str, Any]:
    return {
        "site": r.site, "strategy": r.strategy, "adapted_from": r.adapted_from, "labels_used": r.n_labelled,
        "test_cases": r.n_test,
        "dice": {"source_only": _num(r.source_only_dice), "from_scratch": _num(r.scratch_dice),
                 "adapted": _num(r.adapted_dice)},
        "hd95_mm": {"source_only": _num(r.source_only_hd95), "from_scratch": _num(r.scratch_hd95),
                    "adapted": _num(r.adapted_hd95)},
        "dice_per_class": {name: {k: _num(v) for k, v in d.items()} for name, d in r.class_dice.items()},
        "classification": {model: ({k: _num(v) for k, v in m.items()} if m else None)
                           for model, m in r.classification.items()},
        "gain": _num(r.gain), "forgetting": _num(r.forgetting),
        "negative_transfer": {"flag": bool(r.negative_transfer), "reason": r.negative_transfer},
        "model": {"name": r.model_name, "version": r.model_version, "challenger": r.challenger,
                  "challenger_reason": r.challenger_reason},
        "mlflow_run_id": r.adapted_run_id, "mlflow_parent_run_id": r.parent_run_id,
        "prefect_flow_run_id": r.flow_run_id,
    }


def result_document(outcome: PipelineResult, *, command: str, flow_run: dict[str, str] | None = None,
                    **context: Any) -> dict[str, Any]:
    """The ``--json`` document of a pipeline command (schema ``tl_med.result/1``)."""
    def source(src: PretrainResult | None) -> dict[str, Any] | None:
        return None if src is None else {
            "site": src.site, "model": {"name": src.model_name, "version": src.model_version},
            "mlflow_run_id": src.run_id, "test": {"dice": _num(src.test_dice), "hd95_mm": _num(src.test_hd95)},
            "train_cases": src.n_train, "test_cases": src.n_test}

    return {"schema": RESULT_SCHEMA, "command": command, "tl_med_version": tl_med.__version__, **context,
            "prefect_flow_run": flow_run or {}, "pretrained": outcome.pretrained, "source": source(outcome.source),
            "alternate_source": source(outcome.alternate), "sites": [_site_document(r) for r in outcome.sites]}
