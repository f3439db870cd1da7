"""A human summary of an ingest report (Markdown for Prefect artifacts and the terminal).

It names no input file: outcomes are counted per reason, which never carries attribute values.
"""

from __future__ import annotations

from tl_med.ingest.report import IngestReport

__all__ = ["ingest_markdown"]


def ingest_markdown(report: IngestReport) -> str:
    """Counts, reconciliation and the reasons for every skip and quarantine."""
    s = report.summary()
    lines = [f"### Ingest of site `{report.site}`", "",
             "| inputs | converted | skipped | quarantined | reconciled | volumes converted now | unchanged |",
             "|---|---|---|---|---|---|---|",
             f"| {s['inputs']} | {s['converted']} | {s['skipped']} | {s['quarantined']} | "
             f"{'yes' if s['reconciled'] else '**NO**'} | {s['volumes_converted_now']} | {s['volumes_unchanged']} |"]
    for outcome in ("quarantined", "skipped"):
        reasons = report.reasons(outcome)
        if reasons:
            lines += ["", f"**{outcome.capitalize()}** (files per reason)", "", "| files | reason |", "|---|---|"]
            lines += [f"| {n} | {reason.replace('|', '/')} |" for reason, n in reasons.items()]
    return "\n".join(lines) + "\n"
