"""Learning-rate schedules of a training loop, by epoch: linear warm-up, then constant, cosine
annealing or torch's ``ReduceLROnPlateau`` on the validation Dice.

Every parameter group keeps its own base rate (``initial_lr``, so layer-wise rates keep their
ratios) and the warm-up and cosine factors are a pure function of the epoch, so a resumed fit
sets the same rates as an uninterrupted one; the plateau scheduler's state travels with the
checkpoint (:meth:`EpochSchedule.state_dict`).

Example:
    >>> import torch
    >>> from tl_med.config import LoopConfig
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> s = EpochSchedule(opt, LoopConfig(lr_schedule="cosine", warmup_epochs=1), epochs=3)
    >>> [round(s.factor(e), 3) for e in range(3)]
    [0.5, 1.0, 0.5]
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tl_med.config import LoopConfig

__all__ = ["EpochSchedule"]


class EpochSchedule:
    """Sets each group's rate before an epoch (:meth:`start`) and reads the validation Dice after
    it (:meth:`end`)."""

    def __init__(self, optimizer: torch.optim.Optimizer, loop: LoopConfig, epochs: int) -> None:
        self.optimizer, self.loop, self.epochs = optimizer, loop, epochs
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.5, patience=loop.plateau_patience) if loop.lr_schedule == "plateau" \
            else None

    def factor(self, epoch: int) -> float:
        """The warm-up or cosine factor of ``epoch`` (1 for constant and plateau after warm-up)."""
        warmup = self.loop.warmup_epochs
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        if self.loop.lr_schedule == "cosine":
            t = (epoch - warmup) / max(1, self.epochs - warmup)
            return 0.5 * (1 + math.cos(math.pi * t))
        return 1.0

    def start(self, epoch: int) -> None:
        if self.plateau is not None and epoch > self.loop.warmup_epochs:
            return  # the plateau scheduler owns the rates once the warm-up is over
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])  # a checkpoint from before schedules has none
            group["lr"] = group["initial_lr"] * self.factor(epoch)

    def end(self, epoch: int, val_dice: float | None) -> None:
        if self.plateau is not None and val_dice is not None and epoch >= self.loop.warmup_epochs:
            self.plateau.step(val_dice)

    def state_dict(self) -> dict[str, Any]:
        return {"plateau": self.plateau.state_dict()} if self.plateau is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.plateau is not None and state.get("plateau"):
            self.plateau.load_state_dict(state["plateau"])
