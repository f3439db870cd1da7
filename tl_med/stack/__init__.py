"""The production topology as native processes: PostgreSQL, the MLflow server (tlmed-auth), the
Prefect server, a process work pool and a worker, all under ``<workspace>/stack/``.

``python -m tl_med.stack up|down|status`` (``make stack`` / ``make stack-down``); see :mod:`.control`.
"""

__all__: list[str] = []
