"""Prefect flows: thin compositions of ``tl_med`` stages. Only this package imports Prefect."""

import logging

# Prefect attaches its handlers to the ``tl_med`` logger (PREFECT_LOGGING_EXTRA_LOGGERS, set by
# Workspace.activate) but leaves its level at the root's WARNING: show the library's INFO lines
# (resumed checkpoints, inbox deliveries) in flow-run logs.
logging.getLogger("tl_med").setLevel(logging.INFO)
