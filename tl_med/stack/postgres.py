"""A private PostgreSQL cluster: ``initdb`` into a folder, ``pg_ctl`` start/stop on a local port.

PostgreSQL refuses to run as root. When this process is root the cluster is owned by and run as an
unprivileged account (``postgres`` if it exists, else ``nobody``); if that account cannot reach the
workspace folder (a 0700 parent, as pytest's temporary folders are), the data folder is placed in
``/var/tmp/tlmed-pg-<hash>`` instead and its path is recorded, so ``down`` finds it again.

Connections are TCP on 127.0.0.1 only (no Unix socket), password-checked (scram-sha-256). The
password lives in a libpq password file (mode 0600) that clients find through ``PGPASSFILE``
(psycopg2 and asyncpg both read it), so no connection URI and no command line carries it.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tl_med.errors import TlMedError

__all__ = ["find_bin_dir", "PostgresCluster", "SUPERUSER"]

SUPERUSER = "tlmed"


def find_bin_dir() -> Path | None:
    """The folder holding ``initdb``/``pg_ctl``/``postgres`` (PATH first, then /usr/lib/postgresql/*/bin)."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent  # PATH often holds symlinks into the versioned folder
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return candidates[-1].parent if candidates else None


def _run_as_user() -> str | None:
    """None when not root; else the unprivileged account PostgreSQL will run as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise TlMedError("running as root and neither a 'postgres' nor a 'nobody' account exists to run PostgreSQL")


@dataclass(frozen=True)
class PostgresCluster:
    """One cluster: its data folder, port and the password file clients use."""

    data_dir: Path
    port: int
    passfile: Path
    bin_dir: Path
    run_as: str | None

    @classmethod
    def plan(cls, root: Path, port: int, passfile: Path) -> "PostgresCluster":
        """Where the cluster for the stack folder ``root`` lives (see the module docstring)."""
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise TlMedError("PostgreSQL binaries (initdb, pg_ctl) not found: install postgresql")
        user = _run_as_user()
        data_dir = root / "pgdata"
        if user is not None and not _reachable_by(user, root):
            data_dir = Path("/var/tmp") / f"tlmed-pg-{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]}"
        return cls(data_dir, port, passfile, bin_dir, user)

    def _cmd(self, *argv: str) -> list[str]:
        cmd = [str(self.bin_dir / argv[0]), *argv[1:]]
        return ["runuser", "-u", self.run_as, "--", *cmd] if self.run_as else cmd

    def _own(self, path: Path) -> None:
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    def init(self, password: str) -> None:
        """``initdb`` with superuser ``tlmed`` and ``password`` (only TCP, scram-sha-256)."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._own(self.data_dir)
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.pw"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        self._own(pwfile)
        try:
            _check(subprocess.run(self._cmd("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "-E", "UTF8",
                                            "--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
                                            f"--pwfile={pwfile}", "--no-instructions"),
                                  capture_output=True, text=True), "initdb")
        finally:
            pwfile.unlink(missing_ok=True)

    def start(self) -> None:
        """``pg_ctl start`` on 127.0.0.1:port and wait until it accepts connections."""
        if not self.log_file.exists():
            self.log_file.touch()
            self._own(self.log_file)
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
        _check(subprocess.run(self._cmd("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", options,
                                        "-w", "-t", "60", "start"), capture_output=True, text=True), "pg_ctl start")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(self._cmd("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop"),
                           capture_output=True, text=True)

    def ready(self) -> bool:
        return subprocess.run([str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                              capture_output=True).returncode == 0

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        """A connection URL without password (libpq/asyncpg read it from ``PGPASSFILE``)."""
        return f"{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_databases(self, *names: str) -> None:
        """``CREATE DATABASE`` each name that does not exist yet."""
        import psycopg2

        env_before = os.environ.get("PGPASSFILE")
        os.environ["PGPASSFILE"] = str(self.passfile)
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres")
        finally:
            if env_before is None:
                os.environ.pop("PGPASSFILE", None)
            else:
                os.environ["PGPASSFILE"] = env_before
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for name in names:
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    if cur.fetchone() is None:
                        cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()


def _reachable_by(user: str, folder: Path) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["runuser", "-u", user, "--", "test", "-x", str(folder)], capture_output=True).returncode == 0


def _check(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip().splitlines()[-5:]
        raise TlMedError(f"{what} failed: " + " | ".join(detail))
