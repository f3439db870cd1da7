"""A throwaway local Orthanc (loopback, temporary storage, authentication on) for tests,
benchmarks and trying a PACS site out. Needs the ``Orthanc`` binary (Debian: ``apt-get install
orthanc``); ``send`` needs dcmtk's ``storescu``.

Example:
    >>> # with local_orthanc(tmp, "user", "secret") as pacs:
    >>> #     send(folder, pacs.dicom_port); OrthancClient(pacs.url, ("user", "secret")).check()
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["LocalOrthanc", "local_orthanc", "send", "orthanc_binary", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orthanc_binary() -> str | None:
    found = shutil.which("Orthanc")
    return found or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)


@dataclass(frozen=True)
class LocalOrthanc:
    url: str
    dicom_port: int
    folder: Path


@contextmanager
def local_orthanc(folder: Path, user: str, password: str, *, stable_age: int = 2,
                  timeout: float = 30.0) -> Iterator[LocalOrthanc]:
    """Start Orthanc on free loopback ports with its storage in ``folder``; stop it on exit."""
    binary = orthanc_binary()
    if binary is None:
        raise FileNotFoundError("Orthanc is not installed (apt-get install orthanc)")
    http, dicom = free_port(), free_port()
    (folder / "storage").mkdir(parents=True, exist_ok=True)
    config = {"Name": "tlmed-local", "StorageDirectory": str(folder / "storage"),
              "IndexDirectory": str(folder / "storage"), "HttpPort": http, "DicomPort": dicom,
              "DicomAet": "ORTHANC", "RemoteAccessAllowed": False, "AuthenticationEnabled": True,
              "RegisteredUsers": {user: password}, "StableAge": stable_age, "DicomCheckCalledAet": False,
              "Plugins": []}
    (folder / "orthanc.json").write_text(json.dumps(config))
    url = f"http://127.0.0.1:{http}"
    with open(folder / "orthanc.log", "w") as log:
        proc = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not _up(url, user, password):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield LocalOrthanc(url, dicom, folder)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _up(url: str, user: str, password: str) -> bool:
    try:
        return httpx.get(f"{url}/system", auth=(user, password), timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def send(folder: Path, port: int, aet: str = "ORTHANC") -> None:
    """C-STORE every file under ``folder`` to the local Orthanc with ``storescu``, as a modality does."""
    # --required: propose the SOP classes the files hold (SEG is not in storescu's default list)
    command = ["storescu", "--required", "-aec", aet, "127.0.0.1", str(port), "+sd", "+r", str(folder)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"storescu failed: {(done.stdout + done.stderr)[-1000:]}")
