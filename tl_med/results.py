"""The per-site comparison table, as rows and as Markdown (CLI, Prefect artifact, MLflow)."""

from __future__ import annotations

from dataclasses import dataclass

from tl_med.stages import PretrainResult, SiteResult

__all__ = ["PipelineResult", "result_rows", "results_markdown", "source_line"]

HEADERS = ("site", "strategy", "source-only Dice", "from-scratch Dice", "adapted Dice", "gain",
           "forgetting", "negative transfer", "model version", "MLflow run id")


@dataclass(frozen=True)
class PipelineResult:
    """What one pipeline execution produced: the source model and one result per target site."""

    source: PretrainResult | None  # None when adaptation started from a given pretrained source
    sites: list[SiteResult]
    pretrained: str = ""


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def result_rows(results: list[SiteResult]) -> list[tuple[str, ...]]:
    return [(r.site, r.strategy, _fmt(r.source_only_dice), _fmt(r.scratch_dice), _fmt(r.adapted_dice),
             f"{r.gain:+.3f}", _fmt(r.forgetting), "YES" if r.negative_transfer else "no",
             f"{r.model_name} v{r.model_version}", r.adapted_run_id) for r in results]


def source_line(outcome: PipelineResult) -> str:
    """Where adaptation started from, in one line."""
    src = outcome.source
    if src is None:
        return f"Pretrained source: {outcome.pretrained}"
    return (f"Source model {src.model_name} v{src.model_version}: test Dice {src.test_dice:.3f} at site "
            f"{src.site} (run {src.run_id})")


def results_markdown(outcome: PipelineResult) -> str:
    """Markdown: the source model's line, then one row per target site."""
    lines = [source_line(outcome) + ".", "",
             "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in result_rows(outcome.sites)]
    return "\n".join(lines) + "\n"
