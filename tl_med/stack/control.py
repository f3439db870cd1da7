"""Bring the whole stack up, down, or report on it.

``up`` is idempotent: a part already running and healthy is left alone; ports, passwords and the
PostgreSQL data survive ``down``/``up`` (they live under ``<workspace>/stack/``). Secrets are created
once in ``stack/secrets/`` (mode 0600) and passed to processes through their environment only.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tl_med.stack import mlflow_server, prefect_services
from tl_med.stack.layout import StackLayout
from tl_med.stack.postgres import PostgresCluster
from tl_med.stack.procs import free_port, http_ok, running_pid, spawn, stop, wait_until

__all__ = ["ServiceStatus", "up", "down", "status", "PIPELINE_ACCOUNT", "SERVICES"]

PIPELINE_ACCOUNT = "pipeline"
SERVICES = ("postgres", "mlflow", "prefect-server", "prefect-worker")
_DATABASES = ("mlflow", "mlflow_auth", "prefect")


@dataclass(frozen=True)
class ServiceStatus:
    """One part of the stack: is its process alive and does its health check pass."""

    name: str
    pid: int | None
    healthy: bool
    address: str
    log: str


def _ports(layout: StackLayout) -> dict[str, int]:
    state = layout.read_state()
    ports = {name: int(state.get("ports", {}).get(name) or free_port()) for name in ("postgres", "mlflow", "prefect")}
    layout.write_state({**state, "ports": ports})
    return ports


def _cluster(layout: StackLayout, port: int) -> PostgresCluster:
    cluster = PostgresCluster.plan(layout.root, port, layout.passfile)
    state = layout.read_state()
    if state.get("pg_data_dir"):  # where it was put the first time
        cluster = PostgresCluster(Path(state["pg_data_dir"]), port, layout.passfile, cluster.bin_dir, cluster.run_as)
    layout.write_state({**state, "pg_data_dir": str(cluster.data_dir)})
    return cluster


def _urls(ports: dict[str, int]) -> tuple[str, str]:
    return f"http://127.0.0.1:{ports['mlflow']}", f"http://127.0.0.1:{ports['prefect']}/api"


def _start_postgres(layout: StackLayout, port: int) -> PostgresCluster:
    password = layout.secret("postgres-password")
    layout.write_passfile(password)
    cluster = _cluster(layout, port)
    if not cluster.initialised:
        cluster.init(password)
    if not cluster.ready():
        cluster.start()
    cluster.create_databases(*_DATABASES)
    return cluster


def _start_mlflow(layout: StackLayout, cluster: PostgresCluster, port: int, approvers: Sequence[str],
                  workers: int, timeout: float) -> str:
    url = f"http://127.0.0.1:{port}"
    mlflow_server.write_auth_config(layout.auth_config, database_uri=cluster.url("mlflow_auth"), approvers=approvers,
                                    auth_cache_ttl_seconds=60)
    pid_file, log = layout.pid_file("mlflow"), layout.log_file("mlflow")
    if running_pid(pid_file) is None:
        layout.artifacts.mkdir(parents=True, exist_ok=True)
        env = mlflow_server.server_env(os.environ, auth_config=layout.auth_config,
                                       admin_password=layout.secret("mlflow-admin-password"),
                                       secret_key=layout.secret("mlflow-flask-secret-key"), passfile=layout.passfile)
        spawn(mlflow_server.server_argv(port=port, backend_store_uri=cluster.url("mlflow"), artifacts=layout.artifacts,
                                        workers=workers), env=env, pid_file=pid_file, log_file=log, cwd=layout.root)
    wait_until(lambda: http_ok(f"{url}/health"), timeout=timeout, what="mlflow server", log_file=log,
               pid_file=pid_file)
    admin = (mlflow_server.ADMIN, layout.secret("mlflow-admin-password"))
    mlflow_server.create_user(url, admin, PIPELINE_ACCOUNT, layout.secret("mlflow-pipeline-password"))
    return url


def _start_prefect(layout: StackLayout, cluster: PostgresCluster, port: int, workspace: Path, mlflow_url: str,
                   timeout: float) -> str:
    api = f"http://127.0.0.1:{port}/api"
    pid_file, log = layout.pid_file("prefect-server"), layout.log_file("prefect-server")
    if running_pid(pid_file) is None:
        env = prefect_services.server_env(os.environ, home=layout.prefect_home,
                                          database_url=cluster.url("prefect", "postgresql+asyncpg"),
                                          passfile=layout.passfile)
        spawn(prefect_services.server_argv(port), env=env, pid_file=pid_file, log_file=log, cwd=layout.root)
    wait_until(lambda: prefect_services.server_healthy(api), timeout=timeout, what="prefect server", log_file=log,
               pid_file=pid_file)
    pid_file, log = layout.pid_file("prefect-worker"), layout.log_file("prefect-worker")
    if running_pid(pid_file) is None:
        env = prefect_services.worker_env(os.environ, home=layout.prefect_home, api_url=api, workspace=workspace,
                                          mlflow_url=mlflow_url, mlflow_user=PIPELINE_ACCOUNT,
                                          mlflow_password=layout.secret("mlflow-pipeline-password"))
        spawn(prefect_services.worker_argv(), env=env, pid_file=pid_file, log_file=log, cwd=workspace)
    wait_until(lambda: prefect_services.worker_online(api), timeout=timeout, what="prefect worker", log_file=log,
               pid_file=pid_file)
    return api


def _write_client_env(layout: StackLayout, mlflow_url: str, prefect_api: str) -> None:
    """``stack/client.env``: what a shell needs to use the stack (no secrets: add your own account)."""
    (layout.root / "client.env").write_text(
        f"export MLFLOW_TRACKING_URI={mlflow_url}\nexport PREFECT_API_URL={prefect_api}\n"
        "# export MLFLOW_TRACKING_USERNAME=<your account>; read -s MLFLOW_TRACKING_PASSWORD; "
        "export MLFLOW_TRACKING_PASSWORD\n")


def up(workspace: Path, *, approvers: Sequence[str] = (), mlflow_workers: int = 1,
       timeout: float = 240.0) -> list[ServiceStatus]:
    """Start PostgreSQL, MLflow (tlmed-auth), the Prefect server and a worker; wait until all are healthy."""
    workspace = Path(workspace).resolve()
    layout = StackLayout.of_workspace(workspace)
    layout.root.mkdir(parents=True, exist_ok=True)
    ports = _ports(layout)
    cluster = _start_postgres(layout, ports["postgres"])
    mlflow_url = _start_mlflow(layout, cluster, ports["mlflow"], approvers, mlflow_workers, timeout)
    prefect_api = _start_prefect(layout, cluster, ports["prefect"], workspace, mlflow_url, timeout)
    _write_client_env(layout, mlflow_url, prefect_api)
    return status(workspace)


def down(workspace: Path) -> list[str]:
    """Stop the worker, the Prefect server, MLflow, then PostgreSQL; data and secrets stay. Returns what ran."""
    layout = StackLayout.of_workspace(Path(workspace))
    stopped = [name for name in ("prefect-worker", "prefect-server", "mlflow") if stop(layout.pid_file(name))]
    state = layout.read_state()
    if state.get("pg_data_dir") and state.get("ports", {}).get("postgres"):
        cluster = _cluster(layout, int(state["ports"]["postgres"]))
        if cluster.ready():
            stopped.append("postgres")
        cluster.stop()
    return stopped


def status(workspace: Path) -> list[ServiceStatus]:
    """Each service's pid, health and address."""
    layout = StackLayout.of_workspace(Path(workspace))
    state = layout.read_state()
    ports = state.get("ports", {})
    if not ports:
        return [ServiceStatus(name, None, False, "", "") for name in SERVICES]
    mlflow_url, prefect_api = _urls({k: int(v) for k, v in ports.items()})
    cluster = _cluster(layout, int(ports["postgres"]))
    pg_pid = _postmaster_pid(cluster.data_dir)
    rows = [ServiceStatus("postgres", pg_pid, pg_pid is not None and cluster.ready(),
                          cluster.url("mlflow").rsplit("/", 1)[0], str(cluster.log_file))]
    checks = {"mlflow": (lambda: http_ok(f"{mlflow_url}/health"), mlflow_url),
              "prefect-server": (lambda: prefect_services.server_healthy(prefect_api), prefect_api),
              "prefect-worker": (lambda: prefect_services.worker_online(prefect_api),
                                 f"work pool {prefect_services.POOL}")}
    for name, (check, address) in checks.items():
        pid = running_pid(layout.pid_file(name))
        rows.append(ServiceStatus(name, pid, pid is not None and check(), address, str(layout.log_file(name))))
    return rows


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, IndexError):
        return None


def wait_healthy(workspace: Path, timeout: float = 60.0) -> list[ServiceStatus]:
    """Poll :func:`status` until every part is healthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    rows = status(workspace)
    while not all(r.healthy for r in rows) and time.monotonic() < deadline:
        time.sleep(1)
        rows = status(workspace)
    return rows
