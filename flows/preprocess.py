"""``preprocess-sites``: the per-case preprocessing fan-out as a subflow, on a Dask cluster when asked.

With ``TL_MED_DASK_ADDRESS`` (a ``tcp://scheduler:8786`` address) the mapped ``preprocess-case``
tasks run on that cluster through ``prefect-dask``'s ``DaskTaskRunner``; otherwise on Prefect's
default thread pool. Workers need tl_med installed and the workspace on a shared path.
"""

from __future__ import annotations

import os

from prefect import flow

from flows.naming import run_name
from flows.tasks import preprocess


@flow(name="preprocess-sites", flow_run_name=run_name("preprocess-sites"))
def preprocess_sites(workspace: str, config: dict, manifests: list[str]) -> list[dict[str, str]]:
    """Preprocess every case of ``manifests`` into the workspace cache; one record per case."""
    return preprocess(workspace, config, manifests)


def dask_runner(address: str | None = None, n_workers: int = 2):
    """A ``DaskTaskRunner`` for an existing cluster (``address``) or a temporary ``LocalCluster``."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={"n_workers": n_workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})


def run_preprocess(workspace: str, config: dict, manifests: list[str]) -> list[dict[str, str]]:
    """The subflow, on the cluster at ``$TL_MED_DASK_ADDRESS`` when set."""
    address = os.environ.get("TL_MED_DASK_ADDRESS")
    sub = preprocess_sites.with_options(task_runner=dask_runner(address)) if address else preprocess_sites
    return sub(workspace, config, manifests)
