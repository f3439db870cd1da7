"""``mlflow server --app-name tlmed-auth``: its auth config, command line, environment and user admin.

Secrets reach the server through its environment only (``MLFLOW_AUTH_ADMIN_PASSWORD``,
``MLFLOW_FLASK_SERVER_SECRET_KEY``, ``PGPASSFILE``), never through its command line, which any
local user can read with ``ps``.
"""

from __future__ import annotations

import base64
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence

from tl_med.errors import TlMedError

__all__ = ["write_auth_config", "server_argv", "server_env", "create_user", "grant_model_permission",
           "ADMIN"]

ADMIN = "admin"


def write_auth_config(path: Path, *, database_uri: str, approvers: Sequence[str] = (),
                      default_permission: str = "READ", auth_cache_ttl_seconds: int = 0,
                      overwrite: bool = False) -> Path:
    """Write the auth ini (MLflow's ``[mlflow]`` plus tl_med's ``[tlmed]``); kept if it exists (operator edits)."""
    if path.exists() and not overwrite:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = {database_uri}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "# >0 caches each checked password this long (PBKDF2 costs ~0.3 s a request on 2 cores); with several\n"
        "# workers a changed password or deleted user may stay valid on the others for as long\n"
        f"auth_cache_ttl_seconds = {auth_cache_ttl_seconds}\n\n"
        "[tlmed]\n"
        "# accounts allowed to set or delete the protected aliases (comma separated); re-read on change\n"
        f"approvers = {', '.join(approvers)}\n"
        "protected_aliases = champion\n")
    return path


def server_argv(*, port: int, backend_store_uri: str, artifacts: Path, workers: int = 1) -> list[str]:
    """The command line (no secrets in it)."""
    return [sys.executable, "-m", "mlflow", "server", "--app-name", "tlmed-auth", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--backend-store-uri", backend_store_uri,
            "--artifacts-destination", str(artifacts)]


def server_env(base: Mapping[str, str], *, auth_config: Path, admin_password: str, secret_key: str,
               passfile: Path | None = None) -> dict[str, str]:
    """The server's environment: ``base`` plus the auth settings (credentials of clients removed)."""
    env = {k: v for k, v in base.items() if not k.startswith(("MLFLOW_TRACKING_", "MLFLOW_AUTH_"))}
    env.update({"MLFLOW_AUTH_CONFIG_PATH": str(auth_config), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
                "MLFLOW_FLASK_SERVER_SECRET_KEY": secret_key, "DO_NOT_TRACK": "1",
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    if passfile is not None:
        env["PGPASSFILE"] = str(passfile)
    return env


def _call(url: str, method: str, path: str, auth: tuple[str, str], body: dict) -> dict:
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    req = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(), method=method,
                                 headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise TlMedError(f"{method} {path} as {auth[0]}: HTTP {exc.code} {exc.read()[:200]!r}") from None


def create_user(url: str, admin: tuple[str, str], username: str, password: str) -> None:
    """Create an MLflow account (idempotent: an existing one is left as it is)."""
    try:
        _call(url, "POST", "/api/2.0/mlflow/users/create", admin, {"username": username, "password": password})
    except TlMedError as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
            raise


def grant_model_permission(url: str, admin: tuple[str, str], model: str, username: str,
                           permission: str = "EDIT") -> None:
    """Give ``username`` ``permission`` on the registered model ``model`` (``*``: every registered model)."""
    _call(url, "POST", "/api/3.0/mlflow/users/permissions/grant", admin,
          {"username": username, "resource_type": "registered_model", "resource_id": model,
           "permission": permission})
