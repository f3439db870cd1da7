"""Progress reports reach a front end only when it listens, and read well in a file."""

from __future__ import annotations

import io
import logging

from rich.console import Console

from tl_med.cli.output import ProgressView, progress_view
from tl_med.progress import LOGGER_NAME, activity, note, progress_logger, track


def test_reports_go_nowhere_without_a_listener(capsys):
    seen: list[logging.LogRecord] = []
    root_handler = logging.Handler()
    root_handler.emit = seen.append  # type: ignore[method-assign]
    for name in ("", "tl_med"):  # neither the root logger nor tl_med's (Prefect's API handler) hears them
        logging.getLogger(name).addHandler(root_handler)
    try:
        list(track(range(3), "k", "counting"))
        note("a note")
    finally:
        for name in ("", "tl_med"):
            logging.getLogger(name).removeHandler(root_handler)
    assert seen == [] and capsys.readouterr() == ("", "")
    assert progress_logger().propagate is False
    assert not any(isinstance(h, ProgressView) for h in logging.getLogger(LOGGER_NAME).handlers)


def test_a_file_gets_one_line_per_finished_activity_with_its_figures():
    buf = io.StringIO()
    with progress_view(Console(file=buf, width=60)):  # not a terminal: no bars
        list(track(range(3), "scan:x", "ingest x: read headers", unit="files"))
        with activity("train:r", "train x-finetune", total=4, unit="epochs") as act:
            for loss in (0.9, 0.5):
                act.advance(loss=loss, **{"val Dice": 0.8123})
        note("resumed training from checkpoint after epoch 2 of 4")
        with activity("convert:x", "ingest x: convert series", total=0, unit="series"):
            pass  # nothing to do: no line
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("ingest x: read headers: 3/3 files in ")
    assert lines[1].startswith("train x-finetune: 2/4 epochs in ") and lines[1].endswith("(loss 0.500, val Dice 0.812)")
    assert lines[2] == "resumed training from checkpoint after epoch 2 of 4"
    assert len(lines) == 3
    assert not any(isinstance(h, ProgressView) for h in progress_logger().handlers)  # the view detached itself


def test_a_terminal_gets_live_bars_that_disappear_when_done():
    buf = io.StringIO()
    with progress_view(Console(file=buf, width=100, force_terminal=True)):
        list(track(range(2), "k", "preprocess east", unit="cases"))
    text = buf.getvalue()
    assert "preprocess east: 2/2 cases in" in text
