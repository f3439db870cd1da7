"""The per-site comparison table, as rows and as Markdown (CLI, Prefect artifact, MLflow)."""

from __future__ import annotations

from dataclasses import dataclass

from tl_med.stages import PretrainResult, SiteResult

__all__ = ["PipelineResult", "result_rows", "results_markdown"]

HEADERS = ("site", "source-only Dice", "from-scratch Dice", "adapted Dice", "gain", "model version",
           "MLflow run id")


@dataclass(frozen=True)
class PipelineResult:
    """What one pipeline execution produced: the source model and one result per target site."""

    source: PretrainResult
    sites: list[SiteResult]


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def result_rows(results: list[SiteResult]) -> list[tuple[str, ...]]:
    return [(r.site, _fmt(r.source_only_dice), _fmt(r.scratch_dice), _fmt(r.adapted_dice),
             f"{r.gain:+.3f}", f"{r.model_name} v{r.model_version}", r.adapted_run_id) for r in results]


def results_markdown(outcome: PipelineResult) -> str:
    """Markdown: the source model's line, then one row per target site."""
    source, results = outcome.source, outcome.sites
    lines = [f"Source model `{source.model_name}` v{source.model_version} (run `{source.run_id}`): "
             f"test Dice {source.test_dice:.3f} at site **{source.site}**.", "",
             "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row) + " |" for row in result_rows(results)]
    return "\n".join(lines) + "\n"
