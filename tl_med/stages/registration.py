"""Registering a site's adapted model: the parent run's comparison and ``summary.md``, and a new
version of ``tlmed-<task>-<site>`` whose tags carry the baselines, forgetting, negative transfer
and the challenger decision (:func:`register_adapted`, the last part of
:func:`tl_med.stages.adaptation.adapt_site`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tl_med.manifests import manifest_hash
from tl_med.progress import note
from tl_med.tracking import CHALLENGER, Registration, Tracker, registered_model_name

if TYPE_CHECKING:  # the site job and its adaptation are the adaptation stage's own records
    from tl_med.stages.adaptation import _Adapted, _SiteJob

__all__ = ["register_adapted"]


def register_adapted(job: _SiteJob, label: str, adapted: _Adapted, source_only: float,
              scratch: float | None) -> Registration:
    """The parent run's comparison and summary; the adapted model as a new registered version
    whose tags carry the baselines, forgetting and the negative-transfer flag. The version takes
    ``challenger`` unless the policy (:mod:`tl_med.challenger`) refuses it; the outcome is
    recorded as tags of the parent and adaptation runs and shown as a note when refused."""
    tracker, site, d = job.ctx.tracker, job.site, adapted.metrics
    name, sha = registered_model_name(job.ctx.cfg.task, site), manifest_hash(job.manifest_path)
    n_labelled, n_test = len(job.splits["training"]), len(job.splits["test"])
    tracker.log_metrics(job.parent, {"source_only_dice": source_only, "scratch_dice": scratch,
                                     "adapted_dice": d["dice"], "gain": d["dice"] - source_only,
                                     "forgetting": adapted.forgetting})
    champion = _champion(tracker, name, sha)
    summary = _summary_markdown(site, label, n_labelled, n_test, source_only, scratch, d, adapted.forgetting,
                                adapted.negative, champion)
    for run in (job.parent, adapted.run_id):
        tracker.log_text(run, summary, "summary.md")
    registration = tracker.register_candidate(
        adapted.model_uri, name, adapted.run_id,
        tags={"test_dice": f"{d['dice']:.4f}", "test_hd95": f"{d['hd95']:.2f}",
              "estimated_dice": f"{adapted.estimated:.4f}",
              "source_only_dice": f"{source_only:.4f}",
              "scratch_dice": "" if scratch is None else f"{scratch:.4f}",
              "forgetting": "" if adapted.forgetting is None else f"{adapted.forgetting:.4f}",
              "negative_transfer": "true" if adapted.negative else "false",
              **({"negative_transfer_reason": adapted.negative} if adapted.negative else {}),
              "strategy": label, "site": site, "manifest_sha256": sha,
              "parent_run_id": job.parent, "pretrained_source": adapted.pretrained,
              "harmonised": "true" if adapted.spec.landmarks else "false",
              "package": adapted.package, "modality": adapted.spec.modality,
              **({"test_auc": f"{adapted.classes.auc:.4f}"} if adapted.classes and adapted.classes.auc is not None
                 else {}),
              "champion_version": champion[0] if champion else "",
              "champion_test_dice": f"{champion[1]:.4f}" if champion else ""},
        description=(f"{label} from {adapted.pretrained} on {n_labelled} labelled cases. "
                     f"Test Dice {d['dice']:.3f} (estimated without labels {adapted.estimated:.3f}) "
                     f"vs source-only {source_only:.3f}"
                     + ("" if scratch is None else f" and from-scratch {scratch:.3f}")
                     + f" on the same {n_test} test cases"
                     + (f"; champion v{champion[0]}: {champion[1]:.3f}" if champion else "; no champion yet")
                     + "." + (f" NEGATIVE TRANSFER: {adapted.negative}." if adapted.negative else "")))
    outcome = {"registered_version": registration.version,
               CHALLENGER: "true" if registration.challenger else "false",
               "challenger_reason" if registration.challenger else "challenger_refused": registration.reason}
    for run in (job.parent, adapted.run_id):
        tracker.set_tags(run, outcome)
    if not registration.challenger:
        note(f"{site}: {name} v{registration.version} registered as a candidate, not {CHALLENGER}: "
             f"{registration.reason}")
    return registration


def _champion(tracker: Tracker, name: str, manifest_sha: str) -> tuple[str, float] | None:
    """(version, test Dice) of the current champion when it was evaluated on the same test manifest."""
    try:
        version = tracker.client.get_model_version_by_alias(name, "champion")
    except Exception:  # noqa: BLE001 - no registered model or no champion yet
        return None
    if version.tags.get("manifest_sha256") != manifest_sha or "test_dice" not in version.tags:
        return None
    return str(version.version), float(version.tags["test_dice"])


def _summary_markdown(site: str, label: str, n_labelled: int, n_test: int, source_only: float,
                      scratch: float | None, adapted: dict[str, float], forgetting: float | None,
                      negative: str, champion: tuple[str, float] | None) -> str:
    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = [f"## Site `{site}`: {label} on {n_labelled} labelled cases, {n_test} test cases", "",
             "| model | test Dice |", "|---|---|",
             f"| source-only | {fmt(source_only)} |", f"| from scratch | {fmt(scratch)} |",
             f"| **adapted ({label})** | **{fmt(adapted['dice'])}** (HD95 {adapted['hd95']:.1f} mm) |"]
    if champion:
        lines.append(f"| champion v{champion[0]} (same test manifest) | {champion[1]:.3f} |")
    lines += ["", f"- forgetting (source test Dice lost): {fmt(forgetting)}",
              f"- negative transfer: {negative or 'no'}",
              "- promotion: `tl-med approve --site " + site + " --version <v> --approver <name> --reason <why>`"]
    return "\n".join(lines) + "\n"
