"""Pretrained weights from a local checkpoint or from a model the pipeline logged in MLflow.

Sources (nothing is ever downloaded):

* ``runs:/<run_id>/weights`` — the state dict a pipeline run logged;
* ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` — a registered version; its weights
  are read from the run that produced it;
* a local ``.pt``/``.pth`` state-dict file, loaded with ``weights_only=True``.

Weights are copied by key with ``monai.networks.utils.copy_model_state``; the returned
:class:`TransferReport` says which layers were transferred and which kept their fresh init.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from monai.networks.utils import copy_model_state

from tl_med.errors import InputError
from tl_med.tracking import Tracker

__all__ = ["TransferReport", "load_state", "transfer_weights"]


@dataclass(frozen=True)
class TransferReport:
    transferred: tuple[str, ...]
    newly_initialised: tuple[str, ...]

    def summary(self) -> dict[str, int]:
        return {"transferred": len(self.transferred), "newly_initialised": len(self.newly_initialised)}


def _registered_run_uri(source: str, tracker: Tracker) -> str:
    ref = source.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        version = tracker.client.get_model_version_by_alias(name, alias)
    else:
        name, number = ref.rsplit("/", 1)
        version = tracker.client.get_model_version(name, number)
    return f"runs:/{version.run_id}/weights"


def load_state(source: str, tracker: Tracker) -> dict[str, torch.Tensor]:
    """A state dict from any supported source; a missing source raises :class:`InputError`."""
    try:
        if source.startswith("models:/"):
            source = _registered_run_uri(source, tracker)
        if source.startswith("runs:/"):
            return tracker.load_state_dict(source)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - registry/artifact lookups fail in many ways
        raise InputError(f"pretrained source {source}: {str(exc).splitlines()[0][:160]}") from None
    path = Path(source)
    if not path.is_file():
        raise InputError(f"pretrained source {source}: no such file, run or registered model")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def transfer_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> TransferReport:
    """Copy matching (same key, same shape) tensors into ``model`` in place."""
    _, updated, unchanged = copy_model_state(model, state, inplace=True)
    return TransferReport(tuple(updated), tuple(unchanged))
