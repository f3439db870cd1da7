"""Wire the champion rule and the audit log into MLflow's basic-auth Flask app.

Order of the request hooks: MLflow's basic-auth ``before_request`` (authentication, then its own
permission checks, which admins skip) runs first; :func:`_guard` runs after it, for every account
admins included, and refuses a protected alias move by a non-approver with 403 (recorded as
``denied``). After a successful move (status 200) :func:`_record` appends one ``ok`` event per alias.
"""

from __future__ import annotations

import logging
from typing import Any

from tl_med.registry_auth.audit import AliasEvent, AuditLog, utc_now
from tl_med.registry_auth.moves import AliasMove, alias_routes, pending_moves
from tl_med.registry_auth.policy import PolicySource

__all__ = ["build_app"]

_log = logging.getLogger("tl_med.registry_auth")


class _Guard:
    """The two hooks and the audit view, sharing the policy source and the audit log."""

    def __init__(self, source: PolicySource, audit: AuditLog) -> None:
        self.source, self.audit = source, audit
        self.routes = alias_routes()

    @staticmethod
    def _username() -> str:
        from flask import g
        from mlflow.server import auth as basic_auth

        return g.get("mlflow_authenticated_user") or basic_auth.authenticate_request().username

    def _event(self, move: AliasMove, username: str, outcome: str) -> AliasEvent:
        return AliasEvent(at=utc_now(), username=username, model=move.model, alias=move.alias, action=move.action,
                          version=move.version, previous_version=move.previous_version, outcome=outcome)

    def before(self) -> Any:
        from flask import g, jsonify, request

        action = self.routes.get((request.path, request.method))
        if action is None:
            return None
        try:
            moves = pending_moves(action)
        except Exception:  # noqa: BLE001 - malformed: the handler refuses the same request with a 400
            return None
        username, policy = self._username(), self.source.current()
        refused = [m for m in moves if not policy.may_move(username, m.alias)]
        if refused:
            for move in refused:
                self.audit.append(self._event(move, username, "denied"))
            first = refused[0]
            _log.warning("refused: %s may not %s alias %s of %s", username, action, first.alias, first.model)
            resp = jsonify({"error_code": "PERMISSION_DENIED",
                            "message": f"only approvers may move the alias '{first.alias}' of '{first.model}'; "
                                       f"account '{username}' is not one ([tlmed] approvers in the auth config)"})
            resp.status_code = 403
            return resp
        g.tlmed_alias_moves = (username, moves)
        return None

    def after(self, resp: Any) -> Any:
        from flask import g

        pending = g.pop("tlmed_alias_moves", None)
        if pending and resp.status_code == 200:
            username, moves = pending
            for move in moves:
                try:
                    self.audit.append(self._event(move, username, "ok"))
                except Exception:  # noqa: BLE001 - the move happened: say so loudly, do not hide it
                    _log.exception("could not append the audit record of %s", move)
                _log.info("%s: alias %s of %s -> %s (was %s)", username, move.alias, move.model,
                          move.version or "removed", move.previous_version or "none")
        return resp

    def view(self) -> Any:
        """``GET .../tlmed/alias-audit?name=&alias=&max_results=``: events of models the caller may read."""
        from flask import jsonify, request
        from mlflow.server import auth as basic_auth

        try:
            limit = int(request.args.get("max_results", "1000"))
        except ValueError:
            resp = jsonify({"error_code": "INVALID_PARAMETER_VALUE", "message": "max_results must be an integer"})
            resp.status_code = 400
            return resp
        events = self.audit.events(model=request.args.get("name"), alias=request.args.get("alias"), limit=limit)
        if not basic_auth.sender_is_admin():
            readable: dict[str, bool] = {}
            for model in {e.model for e in events}:
                try:
                    readable[model] = basic_auth._get_registered_model_permission(model).can_read
                except Exception:  # noqa: BLE001 - a deleted model: admins only
                    readable[model] = False
            events = [e for e in events if readable[e.model]]
        return jsonify({"events": [e.as_dict() for e in events]})


def build_app(app: Any = None) -> Any:
    """MLflow's basic-auth app (Flask or, under uvicorn, FastAPI) with the champion rule installed."""
    from mlflow.server import app as mlflow_app
    from mlflow.server import auth as basic_auth
    from mlflow.server.auth.config import _get_auth_config_path
    from mlflow.server.handlers import _get_paths

    from tl_med.registry_auth import AUDIT_PATH

    flask_app = app if app is not None else mlflow_app
    source = PolicySource(_get_auth_config_path())
    policy = source.current()
    audit = AuditLog(policy.audit_database_uri)
    audit.create()
    guard = _Guard(source, audit)
    for i, path in enumerate(_get_paths(AUDIT_PATH)):
        flask_app.add_url_rule(path, endpoint=f"tlmed_alias_audit_{i}", view_func=guard.view, methods=["GET"])
        basic_auth.BEFORE_REQUEST_VALIDATORS[(path, "GET")] = lambda: True  # any account; the view filters
    served = basic_auth.create_app(flask_app)
    flask_app.before_request(guard.before)
    flask_app.after_request(guard.after)
    if not policy.approvers:
        _log.warning("no [tlmed] approvers configured: nobody can move %s", ", ".join(sorted(policy.protected_aliases)))
    return served
