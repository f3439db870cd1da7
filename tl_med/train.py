"""The training loop: MONAI loss and metric, collaborators passed in, logging through a callback.

No subclassing: a strategy decides what the optimizer sees; ``on_epoch`` receives each
:class:`EpochLog` (the tracking adapter logs it to MLflow).

Example:
    >>> # result = fit(model, train_loader, val_loader, optimizer, epochs=30, device=device,
    >>> #              on_epoch=lambda log: print(log.epoch, log.val_dice))
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from monai.losses import DiceCELoss

from tl_med.evaluate import dice_per_case

__all__ = ["EpochLog", "FitResult", "fit", "seed_everything"]


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    train_loss: float
    val_dice: float | None
    seconds: float


@dataclass
class FitResult:
    history: list[EpochLog] = field(default_factory=list)
    best_epoch: int = -1
    best_val_dice: float | None = None
    best_state: dict[str, torch.Tensor] | None = None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (MONAI's ``set_determinism``)."""
    from monai.utils import set_determinism

    set_determinism(seed=seed)


def fit(model: torch.nn.Module, train_loader: Iterable[dict], val_loader: Iterable[dict] | None,
        optimizer: torch.optim.Optimizer, *, epochs: int, device: torch.device,
        before_epoch: Callable[[int], None] | None = None,
        on_epoch: Callable[[EpochLog], None] | None = None,
        extra_losses: Sequence[Callable[[torch.nn.Module], torch.Tensor]] = ()) -> FitResult:
    """Train for ``epochs``; keep the weights of the best validation Dice (or the last epoch).

    ``extra_losses`` are added to the segmentation loss at every step, after the labelled forward
    pass (regularisers such as L2-SP/EWC, alignment losses such as CORAL).
    """
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    result = FitResult()
    model.to(device)
    for epoch in range(epochs):
        if before_epoch is not None:
            before_epoch(epoch)
        start = time.perf_counter()
        model.train()
        total, steps = 0.0, 0
        for batch in train_loader:
            image, label = batch["image"].to(device), batch["label"].to(device).long()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(image), label)
            for extra in extra_losses:
                loss = loss + extra(model)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            steps += 1
        val = dice_per_case(model, val_loader, device) if val_loader is not None else []
        val_dice = sum(val) / len(val) if val else None
        log = EpochLog(epoch, total / max(steps, 1), val_dice, time.perf_counter() - start)
        result.history.append(log)
        if on_epoch is not None:
            on_epoch(log)
        better = val_dice is None or result.best_val_dice is None or val_dice > result.best_val_dice
        if better:
            result.best_epoch, result.best_val_dice = epoch, val_dice
            result.best_state = copy.deepcopy(model.state_dict())
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    return result
