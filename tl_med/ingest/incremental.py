"""Incremental ingest: a stack whose input files (by content hash) and ingest options are
unchanged is not converted again; its manifest entry is reused from the site's state file.

The state file (``data/<site>/ingest-state.json``) holds only content hashes, keyed case ids and
the de-identified manifest entries: nothing identifying.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["IngestState", "fingerprint", "CONVERTER_VERSION"]

STATE_SCHEMA = "tl_med.ingest-state/1"
# Bump when the bytes ingest writes for the same input change (a new header field, a new rule).
CONVERTER_VERSION = "3"


def fingerprint(*parts: object) -> str:
    """sha256 of the parts' canonical JSON form."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class IngestState:
    """What earlier runs converted: ``stacks`` and ``labels`` by fingerprint."""

    path: Path
    options: str
    stacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, options: str) -> "IngestState":
        """The saved state, or an empty one when there is none or it was made with other options."""
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls(path, options)
        if raw.get("schema") != STATE_SCHEMA or raw.get("options") != options \
                or raw.get("converter") != CONVERTER_VERSION:
            return cls(path, options)
        return cls(path, options, raw.get("stacks", {}), raw.get("labels", {}))

    def reusable(self, table: dict[str, dict[str, Any]], fp: str, root: Path, key: str) -> dict | None:
        """The saved record for ``fp`` if its output file is still there with its recorded size."""
        rec = table.get(fp)
        if rec is None:
            return None
        out = root / rec[key]
        return rec if out.is_file() and out.stat().st_size == rec["size"] else None

    def save(self, stacks: dict[str, dict[str, Any]], labels: dict[str, dict[str, Any]]) -> None:
        """Replace the state with this run's records (stale stacks are dropped)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"schema": STATE_SCHEMA, "converter": CONVERTER_VERSION,
                                   "options": self.options, "stacks": stacks, "labels": labels},
                                  indent=1, sort_keys=True))
        os.replace(tmp, self.path)
