"""Pull a site's studies from its Orthanc PACS into the site's DICOM folder, resumably.

Each matching study is fetched instance by instance into ``dicom_dir/pacs/.partial-<ref>/``
(ingest never reads ``.partial-*`` folders). Each file is written to a temporary name and renamed.
Once every instance is there the folder is renamed to ``dicom_dir/pacs/<ref>/`` and the study is
recorded as done in ``data/<site>/pacs-state.json``. So:

- nothing is fetched twice: done studies are skipped, and an interrupted study resumes with the
  instances it is missing;
- a study that grew in the PACS (more instances than recorded) is completed on the next pull;
- an instance whose SOP Instance UID is already somewhere in ``dicom_dir`` (an earlier pull with
  another workspace or key, a folder export) is not fetched again, whatever the pull state says;
- a study that fails half-way is reported (one line, keyed reference) and the other studies go on.

``<ref>`` and the file names are keyed hashes of Orthanc's ids (the project de-identification
key), so neither the pull state nor the folder names carry identifiers. The downloaded files
themselves are raw DICOM in the site's incoming area, like a folder export; ingest de-identifies
them.

Example:
    >>> # report = pull_site(sites.get("east"), ws)
    >>> # report.summary()
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tl_med.errors import InputError
from tl_med.ingest.deid import keyed_hash
from tl_med.ingest.scan import PARTIAL_PREFIX
from tl_med.pacs.orthanc import OrthancClient
from tl_med.sites import SiteConfig
from tl_med.workspace import Workspace

__all__ = ["PullReport", "pull_site", "pacs_folder"]

log = logging.getLogger(__name__)

FETCH_THREADS = 4


@dataclass
class PullReport:
    """What one pull did; ``failed`` holds one line per study that did not complete."""

    site: str
    matched: int = 0
    already: int = 0
    pulled: int = 0
    instances: int = 0
    bytes: int = 0
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)
    present: int = 0  # instances of pulled studies already in dicom_dir (not fetched again)

    def summary(self) -> dict[str, object]:
        return asdict(self)

    def line(self) -> str:
        return (f"{self.site}: {self.matched} studies match in the PACS; {self.already} already here, "
                f"{self.pulled} pulled now ({self.instances} instances, {self.bytes / 1e6:.1f} MB, "
                f"{self.seconds:.1f} s), {len(self.failed)} failed"
                + (f"; {self.present} instances were already in the folder" if self.present else ""))


def pacs_folder(site: SiteConfig) -> Path:
    assert site.dicom_dir is not None
    return site.dicom_dir / "pacs"


class _State:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, int] = json.loads(path.read_text())["done"] if path.is_file() else {}

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"done": self.done}, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def present_instances(folder: Path) -> set[str]:
    """The SOP Instance UIDs of the DICOM files under ``folder`` (headers only; unreadable files
    are left out). Stays in memory."""
    import warnings

    import pydicom

    from tl_med.ingest.scan import list_inputs

    found: set[str] = set()
    if not folder.is_dir():
        return found
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in list_inputs(folder):
            try:
                uid = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).get(
                    "SOPInstanceUID")
            except Exception:  # noqa: BLE001 - not DICOM: not an instance we could skip
                continue
            if uid:
                found.add(str(uid))
    return found


def _fetch_study(client: OrthancClient, key: bytes, study_id: str, final: Path, partial: Path,
                 report: PullReport, present: set[str]) -> int:
    """Fetch the study's missing instances into ``partial`` then publish it as ``final``; its size.
    Instances whose SOP Instance UID is in ``present`` are already on disk and not fetched."""
    instances = client.instance_uids(study_id)
    if final.is_dir():  # the study grew since it was pulled: complete it in place of the old copy
        final.rename(partial)
    partial.mkdir(parents=True, exist_ok=True)
    missing = [(i, partial / f"{keyed_hash(key, 'pacs-instance:' + i, 16)}.dcm") for i in instances]
    missing = [(i, target) for i, target in missing if not target.is_file() and instances[i] not in present]
    report.present += sum(1 for i in instances if instances[i] in present)

    def fetch(item: tuple[str, Path]) -> int:
        instance, target = item
        blob = client.instance_file(instance)
        tmp = partial / f".{target.name}.tmp"
        tmp.write_bytes(blob)
        os.replace(tmp, target)
        return len(blob)

    with ThreadPoolExecutor(max_workers=FETCH_THREADS) as pool:  # a few requests in flight hide the latency
        futures = [pool.submit(fetch, item) for item in missing]
        sizes = [f.result() for f in futures if f.exception() is None]
        errors = [f.exception() for f in futures if f.exception() is not None]
    report.instances += len(sizes)
    report.bytes += sum(sizes)
    if errors:
        raise errors[0]
    partial.rename(final)
    return len(instances)


def pull_site(site: SiteConfig, ws: Workspace, *, client: OrthancClient | None = None,
              key: bytes | None = None) -> PullReport:
    """Fetch the site's matching studies that are not here yet; raise :class:`InputError` when the
    PACS cannot be used at all (unreachable, credentials rejected)."""
    if site.pacs is None:
        raise InputError(f"site '{site.name}' has no pacs source in sites.yaml")
    key = key if key is not None else ws.deid_key()
    own = client is None
    client = client or OrthancClient.for_source(site.pacs)
    report, start = PullReport(site.name), time.perf_counter()
    state = _State(ws.data / site.name / "pacs-state.json")
    root = pacs_folder(site)
    present: set[str] | None = None  # read once, and only when a study needs fetching
    try:
        studies = client.find_studies(site.pacs.query.orthanc())
        report.matched = len(studies)
        for study_id in studies:
            ref = keyed_hash(key, "pacs-study:" + study_id, 16)
            final, partial = root / ref, root / f"{PARTIAL_PREFIX}{ref}"
            if ref in state.done and final.is_dir() and state.done[ref] == _count(client, study_id):
                report.already += 1
                continue
            if present is None:
                assert site.dicom_dir is not None
                present = present_instances(site.dicom_dir)
            try:
                state.done[ref] = _fetch_study(client, key, study_id, final, partial, report, present)
                report.pulled += 1
                state.save()
            except InputError as exc:
                if "HTTP 401" in str(exc) or "HTTP 403" in str(exc):
                    raise
                report.failed.append(f"study {ref}: {exc}")
                log.warning("site %s: study %s not pulled (%s); the next pull resumes it", site.name, ref, exc)
    finally:
        report.seconds = time.perf_counter() - start
        if own:
            client.close()
    return report


def _count(client: OrthancClient, study_id: str) -> int:
    """How many instances the study has in the PACS now."""
    return int(client.study_statistics(study_id)["CountInstances"])
