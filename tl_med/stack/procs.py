"""Background processes with a pid file and a log file each, free ports and health polling."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Mapping, Sequence

from tl_med.errors import TlMedError

__all__ = ["free_port", "spawn", "stop", "running_pid", "wait_until", "http_ok"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def running_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file`` if that process is still alive."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def spawn(argv: Sequence[str], *, env: Mapping[str, str], pid_file: Path, log_file: Path,
          cwd: Path | None = None) -> int:
    """Start ``argv`` in its own session (so it and its children stop together); record its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(list(argv), env=dict(env), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    return proc.pid


def stop(pid_file: Path, *, timeout: float = 20.0) -> bool:
    """SIGTERM the process group started by :func:`spawn`, SIGKILL after ``timeout``; True if one ran."""
    pid = running_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.2)
    if _group_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _reap(pid)
    pid_file.unlink(missing_ok=True)
    return True


def _group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process is left in the group (a zombie leader is another process's
    child to reap, e.g. when ``down`` runs in a new process after ``up`` in a long-lived one)."""
    _reap(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, log_file: Path | None = None,
               pid_file: Path | None = None, fatal: tuple[str, ...] = ("Traceback (most recent call last)",),
               grace: float = 15.0) -> None:
    """Poll ``check`` until true; raise with the log's last lines if it times out, the process died, or
    (after ``grace`` seconds) the log gained a line containing one of ``fatal`` (a worker crash loop)."""
    start = time.monotonic()
    offset = log_file.stat().st_size if log_file is not None and log_file.exists() else 0
    while time.monotonic() - start < timeout:
        if check():
            return
        if pid_file is not None and running_pid(pid_file) is None:
            raise TlMedError(f"{what} exited during start-up{_tail(log_file)}")
        if time.monotonic() - start > grace and _log_has(log_file, offset, fatal):
            raise TlMedError(f"{what} failed during start-up{_tail(log_file)}")
        time.sleep(0.5)
    raise TlMedError(f"{what} not healthy after {timeout:.0f} s{_tail(log_file)}")


def _log_has(log_file: Path | None, offset: int, markers: tuple[str, ...]) -> bool:
    if log_file is None or not markers or not log_file.exists():
        return False
    with open(log_file, "rb") as fh:
        fh.seek(offset)
        text = fh.read().decode(errors="replace")
    return any(m in text for m in markers)


def _tail(log_file: Path | None, lines: int = 15) -> str:
    if log_file is None or not log_file.exists():
        return ""
    text = log_file.read_text(errors="replace").splitlines()[-lines:]
    return f" (log {log_file}):\n" + "\n".join(text)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True if GET ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False
