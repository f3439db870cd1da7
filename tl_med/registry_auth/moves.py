"""Which alias changes a registry request would make, read the way MLflow's own handlers read it.

The request body is parsed with the handler's parser (``mlflow.server.handlers._get_request_message``)
and the same schema, so the rule sees exactly the name/alias/version the handler will act on.
Four kinds of request change aliases: set alias, delete alias, delete a model version (its aliases go
with it) and delete a registered model. GraphQL has no mutation that touches aliases in MLflow 3.17
(checked by a test, so an upgrade that adds one is noticed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["AliasMove", "alias_routes", "pending_moves"]


@dataclass(frozen=True)
class AliasMove:
    """One alias the request would set or remove (``version`` is None for a removal)."""

    model: str
    alias: str
    action: str  # set | delete | delete-version | delete-model
    version: str | None
    previous_version: str | None


def alias_routes() -> dict[tuple[str, str], str]:
    """``(path, method) -> action`` for the REST and ajax-api routes (static prefix included)."""
    from mlflow.server.handlers import _get_paths

    routes: dict[tuple[str, str], str] = {}
    for base, method, action in (("/mlflow/registered-models/alias", "POST", "set"),
                                 ("/mlflow/registered-models/alias", "DELETE", "delete"),
                                 ("/mlflow/model-versions/delete", "DELETE", "delete-version"),
                                 ("/mlflow/registered-models/delete", "DELETE", "delete-model")):
        for path in _get_paths(base):
            routes[(path, method)] = action
    return routes


def _aliases(name: str) -> dict[str, str]:
    from mlflow.server.handlers import _get_model_registry_store

    try:
        return {a: str(v) for a, v in (_get_model_registry_store().get_registered_model(name).aliases or {}).items()}
    except Exception:  # noqa: BLE001 - no such model: nothing to move, the handler reports the error
        return {}


def _message(action: str):
    from mlflow.protos.model_registry_pb2 import (
        DeleteModelVersion,
        DeleteRegisteredModel,
        DeleteRegisteredModelAlias,
        SetRegisteredModelAlias,
    )
    from mlflow.server.handlers import _assert_required, _assert_string, _get_request_message

    string = [_assert_string, _assert_required]
    kinds: dict[str, tuple[Callable[[], object], dict]] = {
        "set": (SetRegisteredModelAlias, {"name": string, "alias": string, "version": string}),
        "delete": (DeleteRegisteredModelAlias, {"name": string, "alias": string}),
        "delete-version": (DeleteModelVersion, {"name": string, "version": string}),
        "delete-model": (DeleteRegisteredModel, {"name": string}),
    }
    cls, schema = kinds[action]
    return _get_request_message(cls(), schema=schema)


def pending_moves(action: str) -> list[AliasMove]:
    """The alias changes the current Flask request asks for (raises as the handler would on bad input)."""
    msg = _message(action)
    current = _aliases(msg.name)
    if action == "set":
        return [AliasMove(msg.name, msg.alias, action, str(msg.version), current.get(msg.alias))]
    if action == "delete":
        return [AliasMove(msg.name, msg.alias, action, None, current.get(msg.alias))]
    if action == "delete-version":
        return [AliasMove(msg.name, a, action, None, v) for a, v in current.items() if v == str(msg.version)]
    return [AliasMove(msg.name, a, action, None, v) for a, v in current.items()]
