"""Site inboxes: turn files a site drops into a folder into one delivery per settled burst.

A hospital's export (or a person) copies new studies into the site's ``inbox`` folder
(``sites.yaml``). :class:`InboxWatcher` polls the inboxes; once a site's inbox has stopped
changing for ``quiet_seconds`` (no file added, grown or touched), the whole burst is one
delivery: DICOM files move into ``dicom_dir/delivery-<UTC time>/`` (keeping their relative
paths) and NIfTI files into ``labels_dir``, where incremental ingest finds them. Hidden files and
names ending in ``.part``/``.tmp`` are treated as still being written and left alone.

A delivery is held back while ``busy(site)`` says a retraining of that site is under way, so its
files never appear half-way through that run's ingest, and so one run follows per delivery.
Nothing here knows about Prefect: the caller emits the new-data event for each delivery.

Example:
    >>> # watcher = InboxWatcher(load_sites(path, ws.root), quiet_seconds=10)
    >>> # for delivery in watcher.poll(): emit(delivery)
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tl_med.sites import SiteConfig, SitesConfig

__all__ = ["Delivery", "InboxWatcher", "EVENT_NEW_DATA", "site_resource"]

log = logging.getLogger(__name__)

EVENT_NEW_DATA = "tl_med.site.new-data"
IN_PROGRESS_SUFFIXES = (".part", ".tmp", ".partial", ".filepart")


def site_resource(site: str) -> dict[str, str]:
    """The event resource naming a site (what deployment triggers match and template from)."""
    return {"prefect.resource.id": f"tl_med.site.{site}", "prefect.resource.name": site, "tl_med.site": site}


@dataclass(frozen=True)
class Delivery:
    """One settled burst of files for a site, after it was moved out of the inbox."""

    site: str
    folder: str          # the delivery folder's name under dicom_dir (a UTC time stamp)
    n_images: int
    n_labels: int
    n_bytes: int


@dataclass
class _Pending:
    snapshot: dict[str, tuple[int, int]] = field(default_factory=dict)
    changed_at: float = 0.0


def _is_label(path: Path) -> bool:
    return path.name.endswith((".nii", ".nii.gz"))


def _in_progress(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts) or rel.name.endswith(IN_PROGRESS_SUFFIXES)


def _snapshot(inbox: Path) -> dict[str, tuple[int, int]]:
    """Size and modification time of every file in the inbox (in-progress files included, so a
    burst still being written keeps the inbox unsettled)."""
    found = {}
    for dirpath, _, names in os.walk(inbox):
        for name in names:
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except FileNotFoundError:  # moved or deleted while we looked
                continue
            found[str(path.relative_to(inbox))] = (st.st_size, st.st_mtime_ns)
    return found


class InboxWatcher:
    """Polls the inboxes of ``sites``; :meth:`poll` returns the deliveries that settled."""

    def __init__(self, sites: SitesConfig, *, quiet_seconds: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sites = [s for s in sites.sites if s.inbox is not None]
        self.quiet_seconds = quiet_seconds
        self.clock = clock
        self._pending: dict[str, _Pending] = {s.name: _Pending() for s in self.sites}

    def poll(self, busy: Callable[[str], bool] = lambda site: False) -> list[Delivery]:
        """One look at every inbox; move and return each delivery that has been quiet long enough
        and whose site is not busy."""
        done = []
        for site in self.sites:
            assert site.inbox is not None
            snap = _snapshot(site.inbox)
            pending, now = self._pending[site.name], self.clock()
            if snap != pending.snapshot:
                pending.snapshot, pending.changed_at = snap, now
                continue
            ready = [rel for rel in snap if not _in_progress(Path(rel))]
            if not ready or now - pending.changed_at < self.quiet_seconds or busy(site.name):
                continue
            done.append(self._deliver(site, ready))
            pending.snapshot, pending.changed_at = {}, now
        return done

    def _deliver(self, site: SiteConfig, rels: list[str]) -> Delivery:
        assert site.inbox is not None and site.dicom_dir is not None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        folder = site.dicom_dir / f"delivery-{stamp}"
        n_images = n_labels = n_bytes = 0
        for rel in sorted(rels):
            src = site.inbox / rel
            if _is_label(src) and site.labels_dir is not None:
                dst = site.labels_dir / src.name
                n_labels += 1
            else:
                dst = folder / rel
                n_images += 1
            dst.parent.mkdir(parents=True, exist_ok=True)
            n_bytes += src.stat().st_size
            shutil.move(src, dst)
        _prune_empty(site.inbox)
        log.info("site %s: delivery %s with %d image files and %d labels (%d bytes)", site.name, folder.name,
                 n_images, n_labels, n_bytes)
        return Delivery(site.name, folder.name, n_images, n_labels, n_bytes)


def _prune_empty(root: Path) -> None:
    """Remove folders the delivery emptied (never ``root`` itself)."""
    for dirpath, _, _ in sorted(os.walk(root), key=lambda w: -len(w[0])):
        if Path(dirpath) != root:
            try:
                Path(dirpath).rmdir()
            except OSError:
                pass
