"""``prefect server start`` on PostgreSQL and ``prefect worker start`` on a process work pool.

The worker creates the work pool (type ``process``) when it does not exist yet. It runs flow runs as
child processes that inherit its environment, so the pipeline's MLflow account reaches them through
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` there, never through flow parameters.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping

__all__ = ["prefect_bin", "server_argv", "server_env", "worker_argv", "worker_env", "server_healthy",
           "worker_online", "POOL"]

POOL = "tl-med"
_QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def prefect_bin() -> str:
    """The ``prefect`` script of this interpreter's environment."""
    candidate = Path(sys.executable).parent / "prefect"
    return str(candidate) if candidate.exists() else "prefect"


def server_argv(port: int) -> list[str]:
    return [prefect_bin(), "server", "start", "--host", "127.0.0.1", "--port", str(port)]


def server_env(base: Mapping[str, str], *, home: Path, database_url: str, passfile: Path) -> dict[str, str]:
    """``database_url`` carries no password: asyncpg reads it from ``PGPASSFILE``."""
    env = {k: v for k, v in base.items() if not k.startswith(("PREFECT_", "MLFLOW_TRACKING_"))}
    env.update({**_QUIET, "PREFECT_HOME": str(home), "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
                "PGPASSFILE": str(passfile)})
    return env


def worker_argv(pool: str = POOL) -> list[str]:
    return [prefect_bin(), "worker", "start", "--pool", pool, "--type", "process", "--name", f"{pool}-worker-1"]


def worker_env(base: Mapping[str, str], *, home: Path, api_url: str, workspace: Path, mlflow_url: str,
               mlflow_user: str, mlflow_password: str) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith(("PREFECT_", "MLFLOW_", "PGPASS"))}
    env.update({**_QUIET, "PREFECT_HOME": str(home), "PREFECT_API_URL": api_url, "TL_MED_HOME": str(workspace),
                "MLFLOW_TRACKING_URI": mlflow_url, "MLFLOW_TRACKING_USERNAME": mlflow_user,
                "MLFLOW_TRACKING_PASSWORD": mlflow_password})
    return env


def server_healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=3) as resp:
            return resp.status == 200 and json.loads(resp.read()) is True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def worker_online(api_url: str, pool: str = POOL) -> bool:
    """True when the pool exists and has at least one worker whose status is ONLINE."""
    req = urllib.request.Request(f"{api_url}/work_pools/{pool}/workers/filter", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return any(w.get("status") == "ONLINE" for w in json.loads(resp.read()))
    except (urllib.error.URLError, OSError, ValueError):
        return False
