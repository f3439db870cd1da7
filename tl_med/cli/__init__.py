"""``tl-med``: the command line.

Commands: ``demo`` (synthetic sites + the whole pipeline), ``run`` (the pipeline on configured
sites), ``adapt`` (one site from a pretrained source, with a strategy and steps), ``ingest`` (one
site, pulling from its PACS first), ``synth`` (write synthetic sites), ``ui`` (MLflow UI on the
workspace) in :mod:`.pipeline`; ``classify`` (a case-level classifier adapted to one site) in
:mod:`.classification`; ``federated`` (pretraining across sites on NVFlare) in
:mod:`.federated`; ``retrain``, ``serve`` and ``watch`` (unattended retraining) in
:mod:`.serving`; ``approve`` / ``reject`` / ``models`` / ``report`` (the champion gate) in
:mod:`.registry`.

Problems a user can fix print one ``error:`` line and exit with status 2; a mistyped command or
option prints Click's usage line and suggestion and exits with status 2; neither shows a
traceback. Results go to stdout (``--json``: one JSON document), progress and status to stderr.
"""

from __future__ import annotations

import sys

from tl_med.quiet import silence_known_noise

silence_known_noise()  # before MONAI is imported by any command

import typer  # noqa: E402

import tl_med  # noqa: E402
from tl_med.cli import apply, classification, federated, pipeline, registry, serving  # noqa: E402,F401 - importing registers the commands
from tl_med.cli.common import app  # noqa: E402
from tl_med.errors import TlMedError  # noqa: E402

__all__ = ["app", "main"]


def _version(value: bool) -> None:
    if value:
        print(f"tl-med {tl_med.__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Per-site transfer learning for medical-image segmentation."""


def _is_click_error(exc: BaseException) -> bool:
    """Click's usage and parameter errors (Typer vendors its own copy of Click, so match by class name)."""
    return any(cls.__name__ == "ClickException" for cls in type(exc).__mro__) and hasattr(exc, "show")


def main() -> None:
    """Entry point: user-fixable errors become one line on stderr and exit status 2."""
    try:
        code = app(standalone_mode=False)
    except TlMedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - Click's usage errors are shown the way Click shows them
        if _is_click_error(exc):
            exc.show()  # type: ignore[attr-defined]
            sys.exit(getattr(exc, "exit_code", 2))
        raise
    sys.exit(code if isinstance(code, int) else 0)
