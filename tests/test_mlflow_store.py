"""The embedded SQLite store is created by one process at a time (mirrors tl_med/mlflow_store.py)."""

from __future__ import annotations

import multiprocessing as mp

from tl_med.mlflow_store import mlflow_client, sqlite_path


def _open_and_register(uri: str, name: str) -> None:
    mlflow_client(uri).create_registered_model(name)


def test_processes_opening_a_fresh_store_together_all_succeed(tmp_path):
    """Without the lock, three processes migrating one new mlflow.db fail most of the time
    (CircularDependencyError, 'table already exists'): the retrain and inference runs of one study."""
    uri = f"sqlite:///{tmp_path / 'ws' / 'mlflow.db'}"
    spawn = mp.get_context("spawn")
    workers = [spawn.Process(target=_open_and_register, args=(uri, f"m{i}")) for i in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=180)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert sorted(m.name for m in mlflow_client(uri).search_registered_models()) == ["m0", "m1", "m2"]


def test_only_sqlite_files_are_locked(tmp_path):
    assert sqlite_path(f"sqlite:///{tmp_path}/a.db") == tmp_path / "a.db"
    assert sqlite_path("sqlite://") is None and sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("http://127.0.0.1:5000") is None and sqlite_path("postgresql://u@h/db") is None
