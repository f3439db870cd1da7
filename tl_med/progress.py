"""Progress reports: the library says what it is doing; a front end decides how to show it.

Library code reports long-running work (ingest files, preprocessed cases, training epochs,
evaluated cases) as :class:`ProgressEvent` records on the ``tl_med.progress`` logger. That logger
does not propagate: nothing is printed, and nothing reaches Prefect's or MLflow's logs, unless a
front end attaches a handler (``tl-med`` draws progress bars on a terminal and one line per
finished activity otherwise).

Example:
    >>> for item in track(range(3), "demo:items", "counting", total=3):
    ...     pass
    >>> with activity("demo:epochs", "training", total=2) as report:
    ...     report.advance(loss=0.5)
    ...     report.advance(loss=0.4)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

__all__ = ["ProgressEvent", "Activity", "activity", "track", "note", "LOGGER_NAME", "progress_logger"]

LOGGER_NAME = "tl_med.progress"
T = TypeVar("T")


def progress_logger() -> logging.Logger:
    """The ``tl_med.progress`` logger (never propagates to the root or ``tl_med`` loggers)."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.propagate = False
    return logger


@dataclass(frozen=True)
class ProgressEvent:
    """One step of an activity: ``start`` (with ``total``), ``advance`` (by ``amount``, with the
    latest ``fields`` such as loss or validation Dice) or ``end`` (with a one-line ``summary``);
    or a ``note``: one line the user should see now (its ``description``)."""

    key: str
    kind: Literal["start", "advance", "end", "note"]
    description: str = ""
    total: float | None = None
    unit: str = ""
    amount: float = 0.0
    fields: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


def _emit(event: ProgressEvent) -> None:
    logger = progress_logger()
    if logger.handlers:
        logger.info("%s %s", event.kind, event.key, extra={"tl_med_progress": event})


class Activity:
    """A started activity; :meth:`advance` it, then :meth:`end` it (or use :func:`activity`)."""

    def __init__(self, key: str, description: str, total: float | None, unit: str = "") -> None:
        self.key, self.description, self.total, self.unit = key, description, total, unit
        self.done = 0.0
        self.fields: dict[str, Any] = {}
        self.summary = ""
        self.ended = False
        _emit(ProgressEvent(key, "start", description, total, unit))

    def advance(self, amount: float = 1, **fields: Any) -> None:
        self.done += amount
        self.fields.update(fields)
        _emit(ProgressEvent(self.key, "advance", self.description, self.total, self.unit, amount, dict(fields)))

    def end(self, summary: str = "") -> None:
        if not self.ended:
            self.ended = True
            _emit(ProgressEvent(self.key, "end", self.description, self.total, self.unit, 0.0, dict(self.fields),
                                summary or self.summary))


@contextmanager
def activity(key: str, description: str, total: float | None = None, unit: str = "") -> Iterator[Activity]:
    """An activity that ends when the block does (with the ``summary`` set on it, if any)."""
    act = Activity(key, description, total, unit)
    try:
        yield act
    finally:
        act.end()


def note(message: str) -> None:
    """One line for the user, shown by the front end as it comes (e.g. "resumed from a checkpoint")."""
    _emit(ProgressEvent("note", "note", message))


def track(items: Iterable[T], key: str, description: str, total: float | None = None,
          unit: str = "") -> Iterator[T]:
    """Yield ``items``, reporting one step per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with activity(key, description, total, unit) as act:
        for item in items:
            yield item
            act.advance()
