"""Per-epoch training checkpoints that a killed run resumes from, bit for bit on CPU.

A checkpoint holds the model and optimizer, the fit's history and best weights, and every random
state the next epoch draws from: torch's, NumPy's and Python's global generators, the DataLoader's
shuffling generator and the random state of each MONAI ``Randomizable`` transform. It is written to
a temporary file and renamed, so a process killed while writing leaves the previous checkpoint.

Example:
    >>> # ckpt = Checkpoint(Path("checkpoints/east-adapt/train.pt"))
    >>> # fit(model, loader, val, optimizer, epochs=30, device=device, checkpoint=ckpt)
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, Randomizable

__all__ = ["Checkpoint", "loader_random_states"]


def _transforms(dataset: Any) -> list[Any]:
    """Every transform reachable from a dataset (through ConcatDataset, Compose and wrapped transforms)."""
    found: list[Any] = []
    for ds in getattr(dataset, "datasets", [dataset]):
        stack = [getattr(ds, "transform", None)]
        while stack:
            t = stack.pop()
            if t is None:
                continue
            found.append(t)
            if isinstance(t, Compose):
                stack.extend(reversed(t.transforms))
            elif isinstance(t, Randomizable):  # dictionary transforms wrap an array transform with its own state
                stack.extend(v for v in reversed(list(vars(t).values())) if isinstance(v, Randomizable))
    return found


def loader_random_states(loader: Any) -> list[np.random.RandomState]:
    """The distinct NumPy random states of the loader's random transforms, in a stable order."""
    seen: dict[int, np.random.RandomState] = {}
    for t in _transforms(getattr(loader, "dataset", None)):
        if isinstance(t, Randomizable):
            seen.setdefault(id(t.R), t.R)
    return list(seen.values())


def _plain(state: tuple) -> tuple:
    """A NumPy RandomState state with its key array as a list (loadable with ``weights_only=True``)."""
    return (state[0], np.asarray(state[1]).tolist(), *state[2:])


def _numpy(state: tuple) -> tuple:
    return (state[0], np.asarray(state[1], dtype=np.uint32), *state[2:])


def _rng_state(loader: Any) -> dict[str, Any]:
    gen = getattr(loader, "generator", None)
    return {"torch": torch.get_rng_state(), "numpy": _plain(np.random.get_state()), "python": random.getstate(),
            "loader": gen.get_state() if gen is not None else None,
            "transforms": [_plain(r.get_state()) for r in loader_random_states(loader)]}


def _set_rng_state(loader: Any, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(_numpy(state["numpy"]))
    random.setstate(state["python"])
    gen = getattr(loader, "generator", None)
    if gen is not None and state["loader"] is not None:
        gen.set_state(state["loader"])
    states = loader_random_states(loader)
    if len(states) != len(state["transforms"]):
        raise ValueError("checkpoint does not match this training setup (random transforms differ)")
    for r, s in zip(states, state["transforms"]):
        r.set_state(_numpy(s))


@dataclass(frozen=True)
class Checkpoint:
    """One training loop's checkpoint file; the caller chooses a path unique to the work."""

    path: Path

    def save(self, *, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader: Any,
             fit_state: dict[str, Any]) -> None:
        """Record the state after ``epoch`` (atomically: temporary file, fsync, rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        blob = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "rng": _rng_state(loader), "fit": fit_state}
        with open(tmp, "wb") as fh:
            torch.save(blob, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def load(self, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             loader: Any) -> tuple[int, dict[str, Any]] | None:
        """Restore the saved state; ``(last finished epoch, fit state)``, or None with no checkpoint."""
        if not self.path.is_file():
            return None
        blob = torch.load(self.path, map_location="cpu", weights_only=True)
        model.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        _set_rng_state(loader, blob["rng"])
        return int(blob["epoch"]), blob["fit"]

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
