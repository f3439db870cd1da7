"""The watchers' Prefect side: emit ``tl_med.site.new-data`` per delivery, and say when a site is
busy (a ``site-retrain`` run for it is pending or running, or was just asked for).

The watching itself is :class:`tl_med.inbox.InboxWatcher` (folders) and
:class:`tl_med.pacs.changes.PacsWatcher` (Orthanc's change feed); ``tl-med serve`` runs this loop
in a thread beside the deployment's runner, ``tl-med watch`` on its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from prefect.events import emit_event

from tl_med.inbox import EVENT_NEW_DATA, Delivery, site_resource

log = logging.getLogger("tl_med.watch")

ACTIVE_STATES = ("PENDING", "RUNNING", "PAUSED", "CANCELLING")


def emit_new_data(delivery: Delivery) -> None:
    """The event a deployment trigger turns into a retrain of ``delivery.site``."""
    emit_event(event=EVENT_NEW_DATA, resource=site_resource(delivery.site),
               payload={"delivery": delivery.folder, "images": delivery.n_images, "labels": delivery.n_labels,
                        "bytes": delivery.n_bytes})


def active_retrains(site: str) -> list:
    """The ``site-retrain`` runs of ``site`` that are pending, running, paused or cancelling on the server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState,
                                                FlowRunFilterStateType, FlowRunFilterTags)
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["site-retrain"])),
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"site:{site}"]), state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType[s] for s in ACTIVE_STATES]))))


class BusySites:
    """A site is busy while a retrain of it is active, and for ``grace`` seconds after its event
    was emitted (until the triggered run has started and tagged itself)."""

    def __init__(self, grace: float = 120.0, active: Callable[[str], list] = active_retrains,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.grace, self.active, self.clock = grace, active, clock
        self.emitted: dict[str, float] = {}

    def __call__(self, site: str) -> bool:
        if self.active(site):
            self.emitted.pop(site, None)  # the run we asked for exists; from now on its state decides
            return True
        return self.clock() - self.emitted.get(site, -1e18) < self.grace

    def mark(self, site: str) -> None:
        self.emitted[site] = self.clock()


class Watcher(Protocol):
    def poll(self, busy: Callable[[str], bool]) -> list[Delivery]: ...


def watch(watchers: Sequence[Watcher], stop: threading.Event, *, interval: float = 2.0,
          emit: Callable[[Delivery], None] = emit_new_data, busy: BusySites | None = None) -> None:
    """Poll the inbox and PACS watchers until ``stop`` is set; one event per delivery. Errors are
    logged, not fatal (a PACS or API that is down is retried at the next poll)."""
    busy = busy or BusySites()
    while not stop.is_set():
        for watcher in watchers:
            try:
                for delivery in watcher.poll(busy):
                    emit(delivery)
                    busy.mark(delivery.site)
                    log.info("site %s: new-data event for delivery %s", delivery.site, delivery.folder)
            except Exception as exc:  # noqa: BLE001 - a transient API, PACS or file error must not end the watch
                log.warning("%s: %s (retrying)", type(watcher).__name__, exc)
        stop.wait(interval)
