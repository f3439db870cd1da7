"""Adaptation strategies: which parameters the labelled target cases train, and how fast.

Each strategy is a small unit with two calls: :meth:`param_groups` (optimizer groups; parameters
it does not train get ``requires_grad=False``) and :meth:`on_epoch_start` (a schedule). The
training loop is the same for all of them.

Example:
    >>> from tl_med.config import NetworkConfig
    >>> from tl_med.models.zoo import build_network
    >>> net = build_network(NetworkConfig(channels=(4, 8, 16), strides=(2, 2)))
    >>> [round(g["lr"], 6) for g in FineTune(lr=1e-3, layer_decay=0.5).param_groups(net)]
    [6.3e-05, 0.000125, 0.00025, 0.0005, 0.001]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from tl_med.adapt.blocks import Block, network_blocks
from tl_med.config import AdaptConfig

__all__ = ["Strategy", "FineTune", "FeatureExtraction", "ProgressiveUnfreeze", "BUILDERS", "build_strategy"]


class Strategy(Protocol):
    """What the adaptation loop needs from a strategy."""

    name: str

    def param_groups(self, model: torch.nn.Module) -> list[dict]:
        """Optimizer parameter groups; parameters the strategy does not train are frozen."""
        ...

    def on_epoch_start(self, epoch: int, model: torch.nn.Module) -> None:
        """Hook called before every epoch (e.g. to unfreeze layers on a schedule)."""
        ...


def _params(model: torch.nn.Module, block: Block) -> list[torch.nn.Parameter]:
    named = dict(model.named_parameters())
    return [named[n] for n in block.names]


@dataclass(frozen=True)
class FineTune:
    """Train every layer; block ``d`` steps back from the output gets ``lr * layer_decay**d``
    (discriminative learning rates: early, generic layers move least)."""

    lr: float
    layer_decay: float = 1.0
    name: str = "finetune"

    def param_groups(self, model: torch.nn.Module) -> list[dict]:
        blocks = network_blocks(model)
        groups = []
        for k, block in enumerate(blocks):
            params = _params(model, block)
            for p in params:
                p.requires_grad_(True)
            groups.append({"params": params, "lr": self.lr * self.layer_decay ** (len(blocks) - 1 - k),
                           "block": block.label})
        return groups

    def on_epoch_start(self, epoch: int, model: torch.nn.Module) -> None:
        return None


@dataclass(frozen=True)
class FeatureExtraction:
    """Freeze the encoder (input to bottleneck, see :mod:`tl_med.adapt.blocks`): the pretrained
    features are kept as they are and only the decoder and head learn the new site."""

    lr: float
    name: str = "feature_extraction"

    def param_groups(self, model: torch.nn.Module) -> list[dict]:
        trained = []
        for block in network_blocks(model):
            for p in _params(model, block):
                p.requires_grad_(not block.encoder)
                if not block.encoder:
                    trained.append(p)
        return [{"params": trained, "lr": self.lr}]

    def on_epoch_start(self, epoch: int, model: torch.nn.Module) -> None:
        return None


@dataclass(frozen=True)
class ProgressiveUnfreeze:
    """Start with the head trainable; every ``every`` epochs unfreeze the next block towards the
    input (ULMFiT-style gradual unfreezing). All blocks are in the optimizer from the start, so
    its state is never rebuilt; frozen ones simply get no gradient."""

    lr: float
    every: int = 5
    name: str = "progressive"

    def param_groups(self, model: torch.nn.Module) -> list[dict]:
        groups = [{"params": _params(model, b), "lr": self.lr, "block": b.label}
                  for b in network_blocks(model)]
        self.on_epoch_start(0, model)
        return groups

    def n_trainable(self, epoch: int, n_blocks: int) -> int:
        """How many blocks (counted from the output) train in ``epoch``."""
        return min(n_blocks, 1 + epoch // self.every)

    def on_epoch_start(self, epoch: int, model: torch.nn.Module) -> None:
        blocks = network_blocks(model)
        keep = self.n_trainable(epoch, len(blocks))
        for k, block in enumerate(blocks):
            for p in _params(model, block):
                p.requires_grad_(k >= len(blocks) - keep)


# one builder per name of tl_med.catalogue.STRATEGIES (a test holds the two together)
BUILDERS: dict[str, Callable[[AdaptConfig], Strategy]] = {
    "finetune": lambda cfg: FineTune(lr=cfg.lr, layer_decay=cfg.layer_decay),
    "feature_extraction": lambda cfg: FeatureExtraction(lr=cfg.lr),
    "progressive": lambda cfg: ProgressiveUnfreeze(lr=cfg.lr, every=cfg.unfreeze_every),
    # the network carries a class head (tl_med.multitask), trained at the full rate with the output head
    "multitask": lambda cfg: FineTune(lr=cfg.lr, layer_decay=cfg.layer_decay, name="multitask"),
}


def build_strategy(cfg: AdaptConfig) -> Strategy:
    """The strategy named in the config, with its settings."""
    return BUILDERS[cfg.strategy](cfg)
