"""Pretrained weights from a MONAI bundle, a local checkpoint, or a model logged in MLflow.

Sources (nothing is ever downloaded):

* a **MONAI bundle** directory or ``.zip`` (``configs/metadata.json`` + ``models/model.pt``), as
  published in the MONAI model zoo, loaded through ``monai.bundle.load`` (which instantiates the
  bundle's ``network_def`` when its ``configs/inference.json`` has one). The local files are
  checked first, so ``monai.bundle`` never takes its download path;
* ``runs:/<run_id>/weights`` — the state dict a pipeline run logged;
* ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` — a registered version; its weights
  are read from the run that produced it;
* a local ``.pt``/``.pth`` checkpoint (a state dict, or a dict holding one under ``state_dict``/
  ``model``/``network``), loaded with ``weights_only=True``; a ``module.`` prefix (DataParallel,
  MedicalNet) is stripped.

Weights are copied by key and shape with ``monai.networks.utils.copy_model_state``; the returned
:class:`TransferReport` says which layers were transferred and which kept their fresh init (for
example a new segmentation head with another number of classes).
"""

from __future__ import annotations

import hashlib
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from monai.networks.utils import copy_model_state

from tl_med.errors import InputError
from tl_med.tracking import Tracker

if TYPE_CHECKING:
    from tl_med.workspace import Workspace

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


def _bundle_root(path: Path, extract_to: Path | None) -> Path:
    """The bundle folder (a zip is extracted once, by content hash)."""
    if path.is_dir():
        return path
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    target = (extract_to or Path(tempfile.gettempdir())) / f"bundle-{digest}"
    if not target.is_dir():
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            if any(Path(n).is_absolute() or ".." in Path(n).parts for n in names):
                raise InputError(f"pretrained source {path}: zip has unsafe paths")
            zf.extractall(target)
    inner = [p.parent.parent for p in target.rglob("configs/metadata.json")]
    return inner[0] if inner else target


def _bundle_state(path: Path, extract_to: Path | None) -> dict[str, torch.Tensor]:
    from monai.bundle import load as load_bundle

    root = _bundle_root(path, extract_to)
    for needed in ("configs/metadata.json", "models/model.pt"):
        if not (root / needed).is_file():
            raise InputError(f"pretrained source {path}: not a MONAI bundle (no {needed})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_bundle(name=root.name, bundle_dir=str(root.parent), model_file="models/model.pt",
                             workflow_type="inference", device="cpu")
    return loaded.state_dict() if isinstance(loaded, torch.nn.Module) else dict(loaded)


def _unwrap(state: object) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "network", "net"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise InputError("checkpoint holds no state dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_state(source: str, tracker: Tracker, ws: "Workspace | None" = None) -> dict[str, torch.Tensor]:
    """A state dict from any supported source; a missing or malformed source raises
    :class:`InputError` naming it."""
    path = Path(source)
    if path.is_dir() or path.suffix == ".zip":
        if not path.exists():
            raise InputError(f"pretrained source {source}: no such bundle")
        return _bundle_state(path, ws.cache / "bundles" if ws else None)
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
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickles with code, corrupt files
        raise InputError(f"pretrained source {source}: not a weights-only checkpoint "
                         f"({type(exc).__name__})") from None
    try:
        return _unwrap(state)
    except InputError as exc:
        raise InputError(f"pretrained source {source}: {exc}") from None


def transfer_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> TransferReport:
    """Copy matching (same key, same shape) tensors into ``model`` in place."""
    _, updated, unchanged = copy_model_state(model, state, inplace=True)
    return TransferReport(tuple(updated), tuple(unchanged))
