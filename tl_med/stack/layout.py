"""Where the stack keeps its files: ``<workspace>/stack/`` (pids, logs, secrets, state, artifacts)."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["StackLayout"]


@dataclass(frozen=True)
class StackLayout:
    """The stack folder of one workspace."""

    root: Path

    @classmethod
    def of_workspace(cls, workspace: Path) -> "StackLayout":
        return cls(Path(workspace).resolve() / "stack")

    def pid_file(self, service: str) -> Path:
        return self.root / "run" / f"{service}.pid"

    def log_file(self, service: str) -> Path:
        return self.root / "logs" / f"{service}.log"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def passfile(self) -> Path:
        return self.secrets_dir / "pgpass"

    @property
    def auth_config(self) -> Path:
        return self.root / "mlflow-auth.ini"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect-home"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def secret(self, name: str) -> str:
        """A random secret created once under ``secrets/`` (mode 0600) and reused afterwards."""
        path = self.secrets_dir / name
        if not path.exists():
            self.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(24))
        return path.read_text().strip()

    def write_passfile(self, password: str) -> None:
        """The libpq password file for the cluster's superuser on 127.0.0.1 (any port, any database)."""
        self.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"127.0.0.1:*:*:tlmed:{password}\n")

    def read_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def write_state(self, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state, indent=2, sort_keys=True))
