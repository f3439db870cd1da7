"""Getting a Prefect API before a command runs a flow, once per command, with one-line failures.

- With ``PREFECT_API_URL`` set, the server there must answer ``/health`` (else one ``error:``
  line naming the URL).
- Without it, Prefect's temporary local server is started here, up front and once for the whole
  command (every flow and client in the process reuses it), with a start-up budget that fits the
  first migration of a fresh ``PREFECT_HOME`` on a slow or busy machine:
  ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` (default here 600, Prefect's own is 20).
  If it still does not answer, or the server process dies, the command stops with one line
  naming the cause and the setting to change (exit status 2).
- Prefect's per-task INFO lines go to Prefect's API (the UI) only; ``--verbose`` shows them on
  the terminal too (Prefect's console handler level, ``PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL``).

Example:
    >>> # api = prepare_prefect(ws, verbose=False)
"""

from __future__ import annotations

import os
import threading
import time

from tl_med.cli.output import err
from tl_med.errors import TlMedError
from tl_med.workspace import Workspace

__all__ = ["prepare_prefect", "check_server", "STARTUP_BUDGET_ENV", "DEFAULT_STARTUP_BUDGET"]

STARTUP_BUDGET_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
DEFAULT_STARTUP_BUDGET = 600
CONSOLE_LEVEL_ENV = "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"


def check_server(url: str) -> str:
    """``url`` (without a trailing slash) once its ``/health`` answers; else a one-line error."""
    import httpx

    url = url.rstrip("/")
    try:
        httpx.get(f"{url}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise TlMedError(f"Prefect server at {url} is not reachable ({type(exc).__name__}: {exc}); "
                         "start it (prefect server start) or unset PREFECT_API_URL") from None
    return url


def _quiet_console(verbose: bool) -> None:
    """Before Prefect configures logging: its console shows warnings only, unless ``verbose``."""
    if verbose:
        os.environ[CONSOLE_LEVEL_ENV] = "INFO"
    else:
        os.environ.setdefault(CONSOLE_LEVEL_ENV, "WARNING")


def _budget() -> int:
    raw = os.environ.setdefault(STARTUP_BUDGET_ENV, str(DEFAULT_STARTUP_BUDGET))
    try:
        return max(1, int(float(raw)))
    except ValueError:
        raise TlMedError(f"{STARTUP_BUDGET_ENV}={raw!r} is not a number of seconds") from None


def _start_temporary_server(budget: int) -> None:
    """Start Prefect's temporary server (a uvicorn subprocess) and wait for it; fail fast if it dies."""
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the process-wide instance every Prefect client reuses
    failure: list[BaseException] = []

    def start() -> None:
        try:
            server.start(timeout=budget)
        except BaseException as exc:  # noqa: BLE001 - reported below as one line
            failure.append(exc)

    thread = threading.Thread(target=start, name="prefect-temporary-server", daemon=True)
    thread.start()
    fix = (f"raise {STARTUP_BUDGET_ENV} (now {budget}), or run a server (prefect server start) and set "
           "PREFECT_API_URL")
    while thread.is_alive():
        thread.join(0.5)
        proc = server.server_process
        code = proc.poll() if proc is not None else None
        if code not in (None, 3):  # 3: port taken, Prefect retries on another port itself
            raise TlMedError(f"Prefect's temporary server exited with status {code} while starting "
                             f"(its database is in $PREFECT_HOME); {fix}")
    if failure:
        reason = str(failure[0]).split(".")[0].strip() or type(failure[0]).__name__
        raise TlMedError(f"Prefect's temporary server did not answer within its start-up budget ({reason}); {fix}")


def prepare_prefect(ws: Workspace, *, verbose: bool = False) -> str:
    """Point Prefect at the workspace and make sure its API answers; the API URL, or ``""`` for the
    temporary server. Call before importing ``flows``."""
    ws.activate()
    _quiet_console(verbose)
    url = os.environ.get("PREFECT_API_URL", "")
    if url:
        return check_server(url)
    budget = _budget()
    fresh = not (ws.prefect_home / "prefect.db").exists()
    what = "creating Prefect's local database (first run only) and starting its temporary server" if fresh \
        else "starting Prefect's temporary server"
    start = time.perf_counter()
    with err.status(what + " ..."):
        _start_temporary_server(budget)
    if fresh or verbose:
        err.print(f"Prefect's temporary server is up ({time.perf_counter() - start:.0f} s)", markup=False)
    return ""
