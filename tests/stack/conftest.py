"""A real ``mlflow server --app-name tlmed-auth`` (SQLite stores) for the module, with three accounts."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tl_med.stack.mlflow_server import ADMIN, create_user, server_argv, server_env, write_auth_config
from tl_med.stack.procs import free_port, http_ok, spawn, stop, wait_until


@dataclass(frozen=True)
class AuthServer:
    url: str
    root: Path
    auth_db: Path
    log: Path
    passwords: dict[str, str]

    def creds(self, user: str) -> tuple[str, str]:
        return user, self.passwords[user]

    def env(self, user: str) -> dict[str, str]:
        """The environment an MLflow client of ``user`` runs with."""
        return {"MLFLOW_TRACKING_URI": self.url, "MLFLOW_TRACKING_USERNAME": user,
                "MLFLOW_TRACKING_PASSWORD": self.passwords[user]}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory):
    """admin (MLflow admin, not an approver), pipeline (registers models) and dr_chen (the approver)."""
    root = tmp_path_factory.mktemp("tlmed-auth")
    passwords = {ADMIN: "admin-Secret-1234", "pipeline": "pipeline-Secret-1234", "dr_chen": "chen-Secret-1234"}
    auth_db = root / "auth.db"
    config = write_auth_config(root / "auth.ini", database_uri=f"sqlite:///{auth_db}", approvers=["dr_chen"],
                               auth_cache_ttl_seconds=60)
    port = free_port()
    env = server_env(os.environ, auth_config=config, admin_password=passwords[ADMIN], secret_key="test-key")
    argv = server_argv(port=port, backend_store_uri=f"sqlite:///{root / 'mlflow.db'}", artifacts=root / "artifacts")
    pid, log = root / "mlflow.pid", root / "mlflow.log"
    spawn(argv, env=env, pid_file=pid, log_file=log, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{url}/health"), timeout=120, what="mlflow server", log_file=log, pid_file=pid)
        for user in ("pipeline", "dr_chen"):
            create_user(url, (ADMIN, passwords[ADMIN]), user, passwords[user])
        yield AuthServer(url, root, auth_db, log, passwords)
    finally:
        stop(pid)


@pytest.fixture
def as_user(auth_server: AuthServer, monkeypatch: pytest.MonkeyPatch):
    """``as_user("pipeline")`` points this process's MLflow clients at the server as that account."""
    def switch(user: str) -> None:
        for key, value in auth_server.env(user).items():
            monkeypatch.setenv(key, value)
    return switch


def tl_med_cli(*args: str, env: dict[str, str]):
    import subprocess

    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run([sys.executable, "-m", "tl_med.cli", *args], capture_output=True, text=True,
                          env={**base, **env}, timeout=300)
