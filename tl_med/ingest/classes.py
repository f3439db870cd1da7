"""Case-level classes (a finding present or absent, a contrast phase): read, checked, paired.

A DICOM site gives them in a CSV (``classes_csv`` in ``sites.yaml``) with a header row and the
columns ``key`` and ``class``. The key is the SeriesInstanceUID, StudyInstanceUID or
AccessionNumber of what it classifies, paired with each converted series like a label file
(series first, then study, then accession), so one study-level row classifies every series of
the study. A datalist item carries its class in its ``"class"`` field.

Every data row is an input of the ingest report, named ``<csv>#row<n>`` (n counts data rows
from 1): it ends ``converted`` (with the case it classifies), or ``quarantined`` with a reason: a
class that is not one of the task's, a key given by more than one row (all of them: which one is
right cannot be told), a key that matches no converted series, an empty key. Keys never leave this
module: the manifest holds the class on the keyed case, and reasons never echo a key or a value.

Example:
    >>> rows = parse_rows("key,class\\n1.2.3,fatty\\n1.2.4,normal\\n")
    >>> [(r.row, r.key, r.value) for r in rows]
    [(1, '1.2.3', 'fatty'), (2, '1.2.4', 'normal')]
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tl_med.ingest.report import IngestReport

__all__ = ["ClassRow", "parse_rows", "read_class_csv", "pair_classes", "KEY_ORDER"]

KEY_ORDER = "SeriesInstanceUID, StudyInstanceUID or AccessionNumber"


@dataclass(frozen=True)
class ClassRow:
    row: int  # data row number, from 1
    key: str
    value: str


def parse_rows(text: str) -> list[ClassRow]:
    """The data rows of a class CSV; :class:`ValueError` (one line) when it has no ``key`` and
    ``class`` columns."""
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    if "key" not in header or "class" not in header:
        raise ValueError("needs a header row with the columns key and class")
    k, c = header.index("key"), header.index("class")
    rows = []
    for n, fields in enumerate(reader, start=1):
        if not any(f.strip() for f in fields):
            continue  # a blank line is not a row
        rows.append(ClassRow(n, fields[k].strip() if k < len(fields) else "",
                             fields[c].strip() if c < len(fields) else ""))
    return rows


def read_class_csv(path: Path, rel: str, report: IngestReport) -> list[ClassRow]:
    """The rows of ``path``; a file that cannot be read as a class CSV is one quarantined input."""
    try:
        return parse_rows(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        problem = "file not found"
    except (UnicodeDecodeError, csv.Error, ValueError) as exc:
        problem = str(exc) if isinstance(exc, ValueError) and not isinstance(exc, UnicodeDecodeError) \
            else f"not a UTF-8 CSV file ({type(exc).__name__})"
    report.n_inputs += 1
    report.record(rel, "quarantined", f"class CSV unusable: {problem}")
    return []


def pair_classes(rows: list[ClassRow], rel: str, classes: tuple[str, ...], cases: Iterable[tuple[str, tuple[str, ...]]],
                 report: IngestReport) -> dict[str, str]:
    """The class of each case, from ``(case id, keys in pairing order)``; every row's outcome is
    recorded in ``report`` (as ``<rel>#row<n>``)."""
    def name(row: ClassRow) -> str:
        return f"{rel}#row{row.row}"

    report.n_inputs += len(rows)
    by_key: dict[str, list[ClassRow]] = defaultdict(list)
    for row in rows:
        by_key[row.key].append(row)
    usable: dict[str, ClassRow] = {}
    for key, group in by_key.items():
        for row in group:
            if not key:
                report.record(name(row), "quarantined", "row without a key")
            elif len(group) > 1:
                others = ", ".join(str(r.row) for r in group if r is not row)
                report.record(name(row), "quarantined", f"duplicate key (also in row {others}): which class is right "
                                                        "cannot be told")
            elif row.value not in classes:
                report.record(name(row), "quarantined", f"unknown class (the task's classes: {', '.join(classes)})")
            else:
                usable[key] = row
    used: set[int] = set()
    found: dict[str, str] = {}
    for case_id, keys in cases:
        row = next((usable[k] for k in keys if k and k in usable), None)
        if row is None:
            continue
        found[case_id] = row.value
        if row.row not in used:
            used.add(row.row)
            report.record(name(row), "converted", case_id=case_id)
    for row in usable.values():
        if row.row not in used:
            report.record(name(row), "quarantined", f"key matches no converted series (by {KEY_ORDER})")
    return found
