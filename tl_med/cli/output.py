"""What a command prints, and where: results on stdout, everything else on stderr.

- **Results** (the comparison table, or one JSON document with ``--json``) go to stdout, so
  ``tl-med run --json > result.json`` or ``| jq`` gets exactly the result.
- **Progress** (files read, series converted, cases preprocessed, epochs trained, cases evaluated)
  and status lines go to stderr: live bars on a terminal, one line per finished activity when
  stderr is a file or a pipe (cron, CI, ``tee``).
- Tables are never squeezed: numbers keep every digit in a terminal of any width and in a file.

Example:
    >>> # with progress_view(err_console):
    >>> #     run_the_flow()
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, \
    TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tl_med.progress import ProgressEvent, progress_logger

__all__ = ["out", "err", "progress_view", "print_table", "emit_json", "ProgressView"]

out = Console(soft_wrap=True, highlight=False)  # lines are never wrapped into a file or pipe
err = Console(stderr=True, soft_wrap=True, highlight=False)


def _fmt_field(name: str, value: Any) -> str:
    return f"{name} {value:.3f}" if isinstance(value, float) else f"{name} {value}"


class ProgressView(logging.Handler):
    """Shows :class:`~tl_med.progress.ProgressEvent` records: bars on a terminal, else a line per
    finished activity. Activities may run in several threads at once (Prefect's task runner)."""

    def __init__(self, console: Console) -> None:
        super().__init__(level=logging.INFO)
        self.console = console
        self.live = console.is_terminal
        self.bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24),
                             MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
                             TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                             TimeRemainingColumn(), console=console, transient=True)
        self.tasks: dict[str, tuple[TaskID | None, float, float]] = {}  # key -> (bar, start, done)

    def emit(self, record: logging.LogRecord) -> None:
        event: ProgressEvent | None = getattr(record, "tl_med_progress", None)
        if event is None:
            return
        try:
            getattr(self, f"_{event.kind}")(event)
        except Exception:  # noqa: BLE001 - showing progress must never break the work
            self.handleError(record)

    def _note(self, e: ProgressEvent) -> None:
        self.console.print(e.description, markup=False, highlight=False, soft_wrap=True)

    def _start(self, e: ProgressEvent) -> None:
        bar = self.bars.add_task(e.description, total=e.total, unit=e.unit, info="") if self.live else None
        self.tasks[e.key] = (bar, time.perf_counter(), 0.0)

    def _advance(self, e: ProgressEvent) -> None:
        bar, start, done = self.tasks.get(e.key, (None, time.perf_counter(), 0.0))
        self.tasks[e.key] = (bar, start, done + e.amount)
        if bar is not None:
            info = ", ".join(_fmt_field(k, v) for k, v in e.fields.items())
            self.bars.update(bar, advance=e.amount, **({"info": info} if info else {}))

    def _end(self, e: ProgressEvent) -> None:
        bar, start, done = self.tasks.pop(e.key, (None, time.perf_counter(), 0.0))
        if bar is not None:
            self.bars.remove_task(bar)
        if not done and not e.total:
            return  # nothing happened (e.g. no series to convert): no line
        count = f"{done:g}" + (f"/{e.total:g}" if e.total else "") + (f" {e.unit}" if e.unit else "")
        extra = e.summary or ", ".join(_fmt_field(k, v) for k, v in e.fields.items())
        line = f"{e.description}: {count} in {time.perf_counter() - start:.1f} s" + (f" ({extra})" if extra else "")
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def __enter__(self) -> "ProgressView":
        if self.live:
            self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.bars.stop()


@contextmanager
def progress_view(console: Console = err) -> Iterator[ProgressView]:
    """Show the library's progress reports on ``console`` for the duration of the block."""
    logger = progress_logger()
    logger.setLevel(logging.INFO)
    view = ProgressView(console)
    logger.addHandler(view)
    try:
        with view:
            yield view
    finally:
        logger.removeHandler(view)


def _width(console: Console, table: Table) -> int:
    return Measurement.get(console, console.options.update(width=100_000), table).maximum


def print_table(table: Table, console: Console = out) -> None:
    """Print ``table`` whole: in a file or pipe at its natural width; in a terminal, cells fold
    (numeric columns are ``no_wrap`` with a minimum width, so their digits never fold)."""
    if console.is_terminal:
        console.print(table)
        return
    wide = Console(file=console.file, width=max(_width(console, table), 80), highlight=False, color_system=None)
    wide.print(table, crop=False)


def numeric_columns(table: Table, names: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Keep the cells of columns ``names`` whole (no wrapping, wide enough for every value)."""
    for i, column in enumerate(table.columns):
        if column.header in names:
            column.no_wrap = True
            column.min_width = max([len(str(r[i])) for r in rows] + [len(str(column.header).split()[0])])


def emit_json(document: dict[str, Any]) -> None:
    """One JSON document on stdout (the stable interface for scripts; see README)."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()

