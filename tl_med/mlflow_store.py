"""One MLflow client per tracking URI, with the embedded SQLite store created by one process at a time.

MLflow creates (or migrates) a SQLite store's tables the first time each process opens it. Two
processes opening a fresh ``mlflow.db`` together (``tl-med serve`` starting a retrain and an
inference flow run for the same new study, say) both run the migrations and one of them fails
(``CircularDependencyError``, "table ... already exists"). :func:`mlflow_client` takes an exclusive
lock on ``<db>.lock`` while this process opens the tracking and registry stores, so the first
creates the tables and the others find them. Server URIs (``http://``, ``postgresql://``) are
opened as they are: their server or database serialises that itself.

Example:
    >>> # client = mlflow_client("sqlite:////abs/ws/mlflow.db")
    >>> # client.search_registered_models()
"""

from __future__ import annotations

import fcntl
from functools import lru_cache
from pathlib import Path

from mlflow import MlflowClient

__all__ = ["mlflow_client", "sqlite_path"]

_SQLITE = "sqlite:///"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for in-memory and non-SQLite URIs)."""
    if not uri.startswith(_SQLITE) or uri in (_SQLITE, f"{_SQLITE}:memory:"):
        return None
    return Path(uri[len(_SQLITE):].split("?", 1)[0])


@lru_cache(maxsize=None)
def _opened(uri: str) -> bool:
    """Open both stores of ``uri`` once per process, under the file lock for a SQLite file."""
    db = sqlite_path(uri)
    if db is None:
        return True
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:  # building each store creates or migrates the tables: the client's tracking store now,
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # its registry store on first use
            client.search_registered_models(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return True


def mlflow_client(uri: str) -> MlflowClient:
    """An ``MlflowClient`` for tracking and registry at ``uri``, its store ready to use."""
    _opened(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
