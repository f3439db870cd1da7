"""One site's share of a federated round, with no NVFlare in sight: start from the global weights,
train on the site's own training split, measure on its own validation split.

The NVFlare client (:mod:`tl_med.federated.client`) calls :func:`local_round` once per round;
tests and benchmarks call it directly.

Example:
    >>> # result = local_round(model, splits, cfg, fed, ws.cache, mu=0.01)
    >>> # result.state, result.train_loss, result.global_val_dice, result.n_steps
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tl_med.config import PipelineConfig
from tl_med.data.loaders import loader_factory
from tl_med.evaluate import dice_per_case
from tl_med.federated.config import FederatedConfig
from tl_med.inference import window_inferer
from tl_med.models.zoo import resolve_device
from tl_med.train import fit

__all__ = ["LocalResult", "local_round", "proximal_term"]


@dataclass(frozen=True)
class LocalResult:
    """What a site sends back after a round: weights and a few numbers (never data)."""

    state: dict[str, torch.Tensor]
    train_loss: float
    global_val_dice: float | None  # the received global model on the site's validation split
    local_val_dice: float | None  # the locally trained model, same split
    n_train: int
    n_steps: int
    seconds: float

    def metrics(self) -> dict[str, float]:
        values = {"train_loss": self.train_loss, "global_val_dice": self.global_val_dice,
                  "local_val_dice": self.local_val_dice, "n_train": float(self.n_train),
                  "local_seconds": self.seconds}
        return {k: float(v) for k, v in values.items() if v is not None}


def proximal_term(model: torch.nn.Module, mu: float) -> Callable[[torch.nn.Module], torch.Tensor]:
    """FedProx's ``mu/2 · Σ ||w - w_global||²`` against ``model``'s current (global) parameters."""
    reference = {name: p.detach().clone() for name, p in model.named_parameters()}

    def term(current: torch.nn.Module) -> torch.Tensor:
        return (mu / 2) * sum(((p - reference[name]) ** 2).sum() for name, p in current.named_parameters())

    return term


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def local_round(model: torch.nn.Module, splits: dict[str, list[dict]], cfg: PipelineConfig, fed: FederatedConfig,
                cache: Path, *, mu: float = 0.0, seed: int | None = None) -> LocalResult:
    """Train ``model`` (holding the global weights) for ``fed.local_epochs`` on ``splits["training"]``.

    The global model's validation Dice is measured first (how well the federation's model serves
    this site), then the local one's. ``mu > 0`` adds the FedProx proximal term.
    """
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    tc = cfg.pretrain
    make = loader_factory(cache, cfg.preprocess, seed=cfg.seed if seed is None else seed, augment=tc.augment)
    infer = window_inferer(cfg.preprocess.patch_size, cfg.inference)
    val = make(splits["validation"], train=False) if splits.get("validation") else None
    model.to(device)
    global_dice = _mean(dice_per_case(model, val, device, infer=infer)) if val is not None else None
    train = make(splits["training"], train=True, batch_size=fed.batch_size or tc.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=fed.lr or tc.lr, weight_decay=tc.weight_decay)
    extra = [proximal_term(model, mu)] if mu > 0 else []
    result = fit(model, train, val, optimizer, epochs=fed.local_epochs, device=device, extra_losses=extra,
                 infer=infer, loop=tc.model_copy(update={"early_stopping": 0}))
    losses = [h.train_loss for h in result.history]
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return LocalResult(state, losses[-1], global_dice, result.history[-1].val_dice, len(splits["training"]),
                       len(train) * fed.local_epochs, time.perf_counter() - start)
