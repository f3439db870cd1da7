"""``tl-med``: the command line.

Commands: ``demo`` (synthetic sites + the whole pipeline), ``run`` (the pipeline on configured
sites), ``adapt`` (one site from a pretrained source, with a strategy and steps), ``ingest`` (one
site, pulling from its PACS first), ``synth`` (write synthetic sites), ``ui`` (MLflow UI on the
workspace) in :mod:`.pipeline`; ``retrain``, ``serve`` and ``watch`` (unattended retraining) in
:mod:`.serving`; ``approve`` / ``reject`` / ``models`` / ``report`` (the champion gate) in
:mod:`.registry`. Problems a user can fix print one ``error:`` line and exit with status 2.
"""

from __future__ import annotations

import sys

import typer

from tl_med.cli import pipeline, registry, serving  # noqa: F401 - importing registers the commands
from tl_med.cli.common import app
from tl_med.errors import TlMedError

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: user-fixable errors become one line on stderr and exit status 2."""
    try:
        app(standalone_mode=False)
    except TlMedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise

