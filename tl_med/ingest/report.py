"""The ingest report: every input file ends in exactly one outcome, and the counts reconcile.

Outcomes: ``converted`` (which case it became), ``skipped`` (a non-image object, and why) or
``quarantined`` (why).

Input file names are the hospital's own and may carry identifiers (a label named by its
SeriesInstanceUID, a folder named after a patient), so the written report names each input by
``ref``, a keyed hash of its path relative to the site's input folder. The in-memory report keeps
the real path for the terminal only (``tl-med ingest`` prints path and ref side by side).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from tl_med.ingest.deid import keyed_hash

__all__ = ["Outcome", "FileOutcome", "IngestReport"]

Outcome = Literal["converted", "skipped", "quarantined"]


@dataclass(frozen=True)
class FileOutcome:
    file: str
    outcome: Outcome
    reason: str = ""
    case_id: str = ""


@dataclass
class IngestReport:
    """Collects one outcome per input file; :meth:`summary` checks inputs = sum of outcomes."""

    site: str
    key: bytes = field(repr=False, default=b"")
    n_inputs: int = 0
    outcomes: dict[str, FileOutcome] = field(default_factory=dict)
    stacks_converted: int = 0
    stacks_reused: int = 0

    def record(self, file: str, outcome: Outcome, reason: str = "", case_id: str = "") -> None:
        """Record a file's outcome; a quarantine or skip never gets overwritten by a later success."""
        prev = self.outcomes.get(file)
        if prev is not None and prev.outcome != "converted":
            return
        self.outcomes[file] = FileOutcome(file, outcome, reason, case_id)

    def count(self, outcome: Outcome) -> int:
        return sum(o.outcome == outcome for o in self.outcomes.values())

    @property
    def quarantined(self) -> list[FileOutcome]:
        return [o for o in self.outcomes.values() if o.outcome == "quarantined"]

    def summary(self) -> dict[str, int | bool]:
        c, s, q = self.count("converted"), self.count("skipped"), self.count("quarantined")
        return {"inputs": self.n_inputs, "converted": c, "skipped": s, "quarantined": q,
                "reconciled": self.n_inputs == c + s + q == len(self.outcomes),
                "volumes_converted_now": self.stacks_converted, "volumes_unchanged": self.stacks_reused}

    def reasons(self, outcome: Outcome) -> dict[str, int]:
        """How many files got each reason (de-identified: reasons never name a file)."""
        counts: dict[str, int] = {}
        for o in self.outcomes.values():
            if o.outcome == outcome:
                counts[o.reason] = counts.get(o.reason, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    def ref(self, file: str) -> str:
        """The de-identified reference of an input path (``f`` + 12 hex of a keyed hash)."""
        return "f" + keyed_hash(self.key, file)

    def to_json(self) -> str:
        files = sorted(({"ref": self.ref(o.file), **{k: v for k, v in asdict(o).items() if k != "file"}}
                        for o in self.outcomes.values()), key=lambda o: o["ref"])
        return json.dumps({"site": self.site, "summary": self.summary(), "files": files}, indent=2)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path
