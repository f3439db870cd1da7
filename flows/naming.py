"""Readable flow-run names: ``<flow>-<site(s)>-<UTC time>`` instead of Prefect's random ones.

Example:
    >>> # @flow(name="site-retrain", flow_run_name=run_name("site-retrain"))
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from prefect.runtime import flow_run

__all__ = ["run_name"]


def _sites(parameters: dict) -> str:
    if parameters.get("site"):
        return str(parameters["site"])
    if parameters.get("targets"):
        return "+".join(parameters["targets"])
    if parameters.get("manifests"):
        return "+".join(Path(m).stem for m in parameters["manifests"])
    return "all-sites"


def run_name(flow_name: str) -> Callable[[], str]:
    """A ``flow_run_name`` callable: the flow, the site(s) its parameters name, the UTC start time."""

    def name() -> str:
        when = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return f"{flow_name}-{_sites(dict(flow_run.parameters or {}))}-{when}"

    return name
