"""A small Orthanc REST client: find studies, list and fetch their instances, read the change feed.

Credentials come from the site's ``pacs`` config (environment variables or a secrets file) and
travel only in the HTTP ``Authorization`` header: they are never logged or written. Errors are
:class:`~tl_med.errors.InputError` with one line naming the URL (never a credential).

Example:
    >>> # client = OrthancClient.for_source(site.pacs)
    >>> # for study in client.find_studies(site.pacs.query.orthanc()): ...
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tl_med.errors import InputError
from tl_med.sites import PacsSource

__all__ = ["OrthancClient", "Change", "credentials"]


def credentials(source: PacsSource) -> tuple[str, str] | None:
    """(user, password) from the environment or the secrets file; None when the PACS needs none."""
    if source.username_env and source.password_env:
        missing = [v for v in (source.username_env, source.password_env) if not os.environ.get(v)]
        if missing:
            raise InputError(f"PACS {source.url}: credential environment variable(s) {', '.join(missing)} not set")
        return os.environ[source.username_env], os.environ[source.password_env]
    if source.credentials_file is not None:
        path = Path(source.credentials_file)
        if not path.is_file():
            raise InputError(f"PACS {source.url}: credentials file {path} not found")
        user, sep, password = path.read_text().strip().partition(":")
        if not sep or not user:
            raise InputError(f"PACS {source.url}: credentials file {path} must hold one line 'user:password'")
        return user, password
    return None


@dataclass(frozen=True)
class Change:
    seq: int
    change_type: str
    resource_type: str
    resource_id: str


class OrthancClient:
    """Orthanc's REST API over one ``httpx.Client`` (keep-alive, timeouts, basic auth)."""

    def __init__(self, url: str, auth: tuple[str, str] | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, auth=auth, timeout=timeout, transport=transport)

    @classmethod
    def for_source(cls, source: PacsSource, transport: httpx.BaseTransport | None = None) -> "OrthancClient":
        return cls(source.url, credentials(source), source.timeout, transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "OrthancClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except httpx.HTTPStatusError as exc:
            code = exc.response.status_code
            hint = {401: "credentials rejected", 403: "access forbidden", 404: "not found"}.get(code, "request failed")
            raise InputError(f"PACS {self.url}: {hint} (HTTP {code}) while {what}") from None
        except httpx.TransportError as exc:
            raise InputError(f"PACS {self.url} is not reachable while {what} ({type(exc).__name__})") from None

    def _get(self, path: str, what: str, **params: Any) -> httpx.Response:
        with self._errors(what):
            response = self._http.get(path, params=params or None)
            response.raise_for_status()
            return response

    def check(self) -> str:
        """The server's Orthanc version (checks URL and credentials)."""
        return str(self._get("/system", "checking the server").json().get("Version", "?"))

    def find_studies(self, query: dict[str, str]) -> list[str]:
        """Orthanc ids of the studies matching ``query`` (study-level DICOM keywords)."""
        with self._errors("finding studies"):
            response = self._http.post("/tools/find", json={"Level": "Study", "Query": query, "Expand": False})
            response.raise_for_status()
            return [str(s) for s in response.json()]

    def study_statistics(self, study_id: str) -> dict[str, Any]:
        """``CountInstances``, ``DiskSize`` … of one study."""
        return self._get(f"/studies/{study_id}/statistics", "reading a study").json()

    def instances(self, study_id: str) -> list[str]:
        """The ids of a study's instances, in Orthanc's order."""
        return list(self.instance_uids(study_id))

    def instance_uids(self, study_id: str) -> dict[str, str]:
        """Each instance id of a study with its SOPInstanceUID (in memory only: to skip instances
        already on disk), in Orthanc's order."""
        found = self._get(f"/studies/{study_id}/instances", "listing a study").json()
        return {str(i["ID"]): str(i.get("MainDicomTags", {}).get("SOPInstanceUID", "")) for i in found}

    def instance_file(self, instance_id: str) -> bytes:
        """One instance's DICOM file (Part 10), as stored."""
        return self._get(f"/instances/{instance_id}/file", "downloading an instance").content

    def study_uid(self, study_id: str) -> str:
        """The StudyInstanceUID of an Orthanc study id (stays in memory: used to file results)."""
        return str(self._get(f"/studies/{study_id}", "reading a study").json()["MainDicomTags"]["StudyInstanceUID"])

    def is_stable(self, study_id: str) -> bool:
        """Whether Orthanc calls the study stable (no instance for ``StableAge`` seconds)."""
        return bool(self._get(f"/studies/{study_id}", "reading a study").json().get("IsStable", False))

    def find_study(self, study_uid: str) -> str | None:
        """The Orthanc id of the study with this StudyInstanceUID, or None."""
        with self._errors("looking up a study"):
            response = self._http.post("/tools/lookup", content=study_uid)
            response.raise_for_status()
        found = [r["ID"] for r in response.json() if r.get("Type") == "Study"]
        return str(found[0]) if found else None

    def lookup_study(self, study_uid: str) -> str:
        """The Orthanc id of the study with this StudyInstanceUID (InputError when absent)."""
        found = self.find_study(study_uid)
        if found is None:
            raise InputError(f"PACS {self.url}: no study with the given StudyInstanceUID")
        return found

    def store(self, dicom: bytes) -> str:
        """Store one DICOM instance (Part 10 bytes) through ``POST /instances``; its Orthanc id."""
        with self._errors("storing an instance"):
            response = self._http.post("/instances", content=dicom, headers={"Content-Type": "application/dicom"})
            response.raise_for_status()
        return str(response.json()["ID"])

    def download_study(self, study_id: str, folder: Path) -> int:
        """Every instance of a study into ``folder`` (named by position); how many."""
        folder.mkdir(parents=True, exist_ok=True)
        ids = self.instances(study_id)
        for k, instance in enumerate(ids):
            (folder / f"{k:06d}.dcm").write_bytes(self.instance_file(instance))
        return len(ids)

    def series_origin(self, series_id: str) -> tuple[str, str, str]:
        """(parent study id, Modality, Manufacturer) of a series; ``("", "", "")`` once it is gone."""
        with self._errors("reading a series"):
            response = self._http.get(f"/series/{series_id}")
            if response.status_code == 404:
                return "", "", ""
            response.raise_for_status()
        body = response.json()
        tags = body.get("MainDicomTags", {})
        return str(body.get("ParentStudy", "")), str(tags.get("Modality", "")), str(tags.get("Manufacturer", ""))

    def changes(self, since: int, limit: int = 100) -> tuple[list[Change], int, bool]:
        """One page of the change feed after ``since``: (changes, last seq, done)."""
        body = self._get("/changes", "reading the change feed", since=since, limit=limit).json()
        changes = [Change(int(c["Seq"]), c["ChangeType"], c["ResourceType"], str(c["ID"])) for c in body["Changes"]]
        return changes, int(body["Last"]), bool(body["Done"])

    def last_change(self) -> int:
        return int(self._get("/changes", "reading the change feed", last="").json()["Last"])
