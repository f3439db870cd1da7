"""Where a run's files live: one workspace directory holds everything a run writes.

Layout (all under the workspace root, default ``./tlmed-workspace``, overridable by ``TL_MED_HOME``
or an explicit path)::

    incoming/<site>/         raw inputs (the demo writes synthetic DICOM here)
    data/<site>/             de-identified NIfTI images/ and labels/ produced by ingest, dicom/<case>/
                             (de-identified DICOM, when the site keeps it), ingest-state.json
    manifests/<site>.json    per-site data manifests (decathlon datalist + provenance)
    reports/<site>/          ingest reports
    cache/                   MONAI PersistentDataset caches, keyed by transform config
    mlflow.db, mlartifacts/  embedded MLflow store (unless MLFLOW_TRACKING_URI is set)
    prefect/                 PREFECT_HOME for the embedded Prefect server
    secrets/deid.key         the key for de-identifying hashes (never logged)

Settings are read when called, never at import time.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Workspace", "DEFAULT_WORKSPACE", "resolve_workspace"]

DEFAULT_WORKSPACE = Path("tlmed-workspace")


def resolve_workspace(path: str | os.PathLike[str] | None = None) -> "Workspace":
    """Return the workspace for an explicit path, else ``$TL_MED_HOME``, else ``./tlmed-workspace``.

    Example:
        >>> ws = resolve_workspace("/tmp/ws")
        >>> ws.root.name
        'ws'
    """
    raw = path if path is not None else os.environ.get("TL_MED_HOME") or DEFAULT_WORKSPACE
    return Workspace(root=Path(raw).expanduser().resolve())


@dataclass(frozen=True)
class Workspace:
    """Paths inside one workspace root; creating directories is explicit (:meth:`ensure`)."""

    root: Path

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def tracking_uri(self) -> str:
        """``$MLFLOW_TRACKING_URI`` when set, else the workspace's SQLite store (absolute URI)."""
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.mlflow_db}"

    @property
    def uses_embedded_mlflow(self) -> bool:
        return not os.environ.get("MLFLOW_TRACKING_URI")

    @property
    def artifact_root(self) -> Path | None:
        """Where new experiments keep artifacts: the workspace's folder beside the embedded store;
        ``None`` with a tracking server, whose artifact store then holds them (``mlflow-artifacts:``,
        proxied), so reviewers and workers on other machines see the same files."""
        return self.mlflow_artifacts if self.uses_embedded_mlflow else None

    def site_manifest(self, site: str) -> Path:
        return self.manifests / f"{site}.json"

    def ensure(self) -> "Workspace":
        """Create the workspace directories (idempotent) and return ``self``."""
        for d in (self.incoming, self.data, self.manifests, self.reports, self.cache, self.prefect_home, self.mlflow_artifacts, self.root / "secrets"):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def deid_key(self) -> bytes:
        """The project key for keyed-hash de-identification.

        ``$TL_MED_DEID_KEY`` (hex) wins, so several workspaces of one project share ids; otherwise a
        random key is created once in ``secrets/deid.key`` (mode 0600) and reused.
        """
        env = os.environ.get("TL_MED_DEID_KEY")
        if env:
            return bytes.fromhex(env)
        path = self.root / "secrets" / "deid.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
        return bytes.fromhex(path.read_text().strip())

    def orchestration_env(self) -> dict[str, str]:
        """Environment for Prefect/MLflow so a run without servers stays inside the workspace.

        ``PREFECT_API_URL``, when already set, is left alone. The MLflow URI is not exported: library
        code passes :attr:`tracking_uri` explicitly, so two workspaces can be used in one process.
        """
        env = {
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_LOGGING_EXTRA_LOGGERS": "tl_med",
            "TL_MED_HOME": str(self.root),
        }
        return env

    def activate(self) -> None:
        """Export :meth:`orchestration_env` into ``os.environ`` (call before importing Prefect)."""
        self.ensure()
        for k, v in self.orchestration_env().items():
            os.environ[k] = v
