"""Follow an Orthanc PACS's change feed and report the site's studies that became stable.

Orthanc marks a study ``StableStudy`` once no instance has arrived for ``StableAge`` seconds: the
modality has finished sending it. :class:`PacsWatcher` reads ``/changes`` from a cursor kept in
the workspace (``pacs/<site>-cursor.json``), and keeps the ``StableStudy`` changes whose study
matches the site's query. It reports them as a :class:`~tl_med.inbox.Delivery` per site, which the
caller turns into the new-data event, so retraining starts only when a study is complete. The
retrain's ingest then pulls them (:func:`tl_med.pacs.pull.pull_site`).

A study is news only when it gained a series other than a SEG tl_med predicted
(:func:`tl_med.own_segs.is_prediction`): storing a prediction back makes its study stable again,
which must not start another retrain or segmentation. Studies that gained such a series and are not
stable yet are kept with the cursor (``awaiting``).

A new watcher starts at the feed's current end: studies already in the PACS are the pull's
backlog, not news. The cursor and the count of stable studies not yet announced (held back while
the site is busy retraining) are saved together. A process that dies between saving and
emitting loses at most that one announcement; the studies themselves are still pulled by the
site's next retrain.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from tl_med.inbox import Delivery
from tl_med.own_segs import is_prediction
from tl_med.pacs.orthanc import OrthancClient
from tl_med.sites import SiteConfig, SitesConfig
from tl_med.workspace import Workspace

__all__ = ["PacsWatcher"]

log = logging.getLogger(__name__)


class PacsWatcher:
    """``poll(busy)`` returns one delivery per site whose PACS has new stable studies of its own."""

    def __init__(self, sites: SitesConfig, ws: Workspace,
                 client_for: Callable[[SiteConfig], OrthancClient] | None = None) -> None:
        self.sites = [s for s in sites.sites if s.pacs is not None]
        self.ws = ws
        self.client_for = client_for or (lambda site: OrthancClient.for_source(site.pacs))

    def _cursor_path(self, site: str) -> Path:
        return self.ws.root / "pacs" / f"{site}-cursor.json"

    def _load(self, site: SiteConfig, client: OrthancClient) -> tuple[int, int, set[str]]:
        """(cursor, stable studies not yet announced, studies awaiting stability); a new watcher
        starts at the feed's end."""
        path = self._cursor_path(site.name)
        if path.is_file():
            saved = json.loads(path.read_text())
            return int(saved["since"]), int(saved.get("pending", 0)), set(saved.get("awaiting", []))
        return client.last_change(), 0, set()

    def _save(self, site: str, since: int, pending: int, awaiting: set[str]) -> None:
        path = self._cursor_path(site)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"since": since, "pending": pending, "awaiting": sorted(awaiting)}))
        os.replace(tmp, path)

    def _new_stable(self, site: SiteConfig, client: OrthancClient, since: int,
                    awaiting: set[str]) -> tuple[int, int]:
        """(new stable studies of the site after ``since``, the new cursor); updates ``awaiting``
        (Orthanc ids, not identifiers) with the studies that gained a series not predicted by tl_med."""
        stable: set[str] = set()
        done = False
        while not done:
            changes, last, done = client.changes(since)
            for change in changes:
                if change.change_type == "NewSeries":
                    study, modality, manufacturer = client.series_origin(change.resource_id)
                    if study and not is_prediction(modality, manufacturer):
                        awaiting.add(study)
                elif change.change_type == "StableStudy" and change.resource_id in awaiting:
                    stable.add(change.resource_id)
                    awaiting.discard(change.resource_id)
            since = last
        if stable:
            assert site.pacs is not None
            stable &= set(client.find_studies(site.pacs.query.orthanc()))
        return len(stable), since

    def poll(self, busy: Callable[[str], bool] = lambda site: False) -> list[Delivery]:
        deliveries = []
        for site in self.sites:
            with self.client_for(site) as client:
                since, pending, awaiting = self._load(site, client)
                new, since = self._new_stable(site, client, since, awaiting)
            if new:
                log.info("site %s: %d new stable studies in the PACS", site.name, new)
            pending += new
            if pending and not busy(site.name):
                deliveries.append(Delivery(site.name, "pacs", pending, 0, 0))
                pending = 0
            self._save(site.name, since, pending, awaiting)
        return deliveries
