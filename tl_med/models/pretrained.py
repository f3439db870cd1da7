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
:class:`TransferReport` says which tensors were transferred, which exist in both with another
shape, which the network has and the source lacks (they keep their fresh init, e.g. a new head
with another number of classes) and which the source has and the network lacks, and the share of
the network's parameters transferred. :meth:`TransferReport.require` refuses a transfer below a
minimum share: a source built for another network transfers almost nothing, and silently
training from a mostly random start is not transfer learning.
"""

from __future__ import annotations

import hashlib
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from monai.networks.utils import copy_model_state

from tl_med.errors import InputError
from tl_med.tracking import Tracker

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from tl_med.workspace import Workspace

__all__ = ["TransferReport", "load_state", "registered_version", "transfer_weights"]


@dataclass(frozen=True)
class TransferReport:
    """What a transfer copied (by key and shape) and what it could not."""

    transferred: tuple[str, ...]
    newly_initialised: tuple[str, ...]  # in the network, not copied: missing or shape-mismatched
    shape_mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    unexpected: tuple[str, ...] = ()  # in the source only
    share: float = 1.0  # of the network's parameter elements that were transferred

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(k for k in self.newly_initialised if k not in self.shape_mismatched)

    def summary(self) -> dict[str, float]:
        return {"transferred": len(self.transferred), "newly_initialised": len(self.newly_initialised),
                "shape_mismatched": len(self.shape_mismatched), "missing": len(self.missing),
                "unexpected": len(self.unexpected), "share": round(self.share, 4)}

    def to_json(self) -> dict[str, object]:
        return {**self.summary(), "transferred_keys": list(self.transferred), "missing_keys": list(self.missing),
                "unexpected_keys": list(self.unexpected),
                "shape_mismatched_keys": {k: {"source": list(a), "network": list(b)}
                                          for k, (a, b) in self.shape_mismatched.items()}}

    def describe(self) -> str:
        """``transferred 98 % of the parameters (40 tensors); 2 shape-mismatched (model.2.conv.weight
        (2, 16, 3, 3, 3) in the source, (3, 16, 3, 3, 3) here), 0 missing, 0 unexpected``"""
        def first(keys: tuple[str, ...]) -> str:
            return f" (e.g. {keys[0]})" if keys else ""

        mismatch = ""
        if self.shape_mismatched:
            key, (src, net) = next(iter(self.shape_mismatched.items()))
            mismatch = f" ({key}: {tuple(src)} in the source, {tuple(net)} here)"
        return (f"transferred {self.share:.0%} of the parameters ({len(self.transferred)} tensors); "
                f"{len(self.shape_mismatched)} shape-mismatched{mismatch}, {len(self.missing)} missing"
                f"{first(self.missing)}, {len(self.unexpected)} unexpected{first(self.unexpected)}")

    def require(self, min_share: float, source: str) -> None:
        """Raise :class:`InputError` (one line naming the source and the mismatch) below ``min_share``."""
        if self.share < min_share:
            raise InputError(f"pretrained source {source} does not fit the network: {self.describe()}; "
                             f"at least {min_share:.0%} is required (adapt.min_transfer_share). Check "
                             "network.* against the source's architecture")


def registered_version(source: str, client: MlflowClient) -> ModelVersion:
    """The registry version a ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` URI names
    (MLflow's exceptions when it names none)."""
    ref = source.removeprefix("models:/")
    if "@" in ref:
        return client.get_model_version_by_alias(*ref.split("@", 1))
    return client.get_model_version(*ref.rsplit("/", 1))


def _registered_run_uri(source: str, tracker: Tracker) -> str:
    return f"runs:/{registered_version(source, tracker.client).run_id}/weights"


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
    """Copy matching (same key, same shape) tensors into ``model`` in place; report the rest."""
    own = model.state_dict()
    _, updated, unchanged = copy_model_state(model, state, inplace=True)
    mismatched = {k: (tuple(state[k].shape), tuple(own[k].shape)) for k in unchanged
                  if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)}
    copied = set(updated)
    params = dict(model.named_parameters())
    total = sum(p.numel() for p in params.values())
    share = sum(p.numel() for k, p in params.items() if k in copied) / total if total else 1.0
    return TransferReport(tuple(updated), tuple(unchanged), mismatched,
                          tuple(k for k in state if k not in own), share)
