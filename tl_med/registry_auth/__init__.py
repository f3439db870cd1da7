"""``mlflow server --app-name tlmed-auth``: MLflow basic-auth plus the champion rule and an alias audit log.

MLflow's basic-auth app checks ``SetRegisteredModelAlias`` with the same EDIT permission as tagging a
version, so an account that may register versions (the pipeline) could also move ``champion``. This
app wraps MLflow's own basic-auth app (same users, permissions, admin bootstrap and REST API) and adds:

* **the champion rule**: setting or deleting a *protected* alias (default ``champion``), and deleting a
  model version or a registered model that a protected alias points to, is allowed only for the
  accounts listed as ``approvers`` in the ``[tlmed]`` section of the auth ini file
  (``MLFLOW_AUTH_CONFIG_PATH``). Admins are *not* approvers unless listed (separation of duties);
* **an append-only audit log** of every alias set/delete (who = the authenticated account, when in UTC,
  model, alias, version, previous version, ``ok`` or ``denied``), a table ``tlmed_alias_audit`` in the
  auth database with triggers refusing UPDATE and DELETE, readable through
  ``GET /api/2.0/tlmed/alias-audit`` (only records of models the caller may read).

Example ini (``MLFLOW_AUTH_CONFIG_PATH=/etc/mlflow/auth.ini``)::

    [mlflow]
    default_permission = READ
    database_uri = postgresql://mlflow@db/mlflow_auth
    admin_username = admin

    [tlmed]
    approvers = dr_chen, dr_osei
    protected_aliases = champion

The registration lives in ``pyproject.toml`` (entry point group ``mlflow.app``); the server is started
with ``mlflow server --app-name tlmed-auth`` and needs ``MLFLOW_FLASK_SERVER_SECRET_KEY`` and, the
first time, ``MLFLOW_AUTH_ADMIN_PASSWORD``, exactly like ``--app-name basic-auth``.
"""

from __future__ import annotations

from typing import Any

from tl_med.registry_auth.policy import ApprovalPolicy, read_policy

__all__ = ["create_app", "ApprovalPolicy", "read_policy", "AUDIT_PATH"]

AUDIT_PATH = "/mlflow/tlmed/alias-audit"  # served as /api/2.0/... and /ajax-api/2.0/...


def create_app(app: Any = None) -> Any:
    """The app factory MLflow's ``--app-name tlmed-auth`` loads (Flask or, under uvicorn, FastAPI)."""
    from tl_med.registry_auth.server import build_app

    return build_app(app)
