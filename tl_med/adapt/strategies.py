"""Adaptation strategies, one small unit each, behind one interface.

A strategy turns a network into optimizer parameter groups (freezing what it does not train) and
may act at the start of each epoch. The training loop stays the same for all of them.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    >>> groups = FineTune(lr=1e-3).param_groups(net)
    >>> groups[0]["lr"]
    0.001
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from tl_med.config import AdaptConfig

__all__ = ["Strategy", "FineTune", "build_strategy"]


class Strategy(Protocol):
    """What the adaptation loop needs from a strategy."""

    name: str
    lr: float

    def param_groups(self, model: torch.nn.Module) -> list[dict]:
        """Optimizer parameter groups; parameters not in any group are frozen."""
        ...

    def on_epoch_start(self, epoch: int, model: torch.nn.Module) -> None:
        """Hook called before every epoch (e.g. to unfreeze layers on a schedule)."""
        ...


@dataclass(frozen=True)
class FineTune:
    """Train every layer from the pretrained weights at one learning rate."""

    lr: float
    name: str = "finetune"

    def param_groups(self, model: torch.nn.Module) -> list[dict]:
        for p in model.parameters():
            p.requires_grad_(True)
        return [{"params": list(model.parameters()), "lr": self.lr}]

    def on_epoch_start(self, epoch: int, model: torch.nn.Module) -> None:
        return None


def build_strategy(cfg: AdaptConfig) -> Strategy:
    """The strategy named in the config, with its settings."""
    if cfg.strategy == "finetune":
        return FineTune(lr=cfg.lr)
    raise ValueError(f"unknown strategy '{cfg.strategy}'")
