"""Penalties against forgetting the source site while fine-tuning.

* :class:`L2SP` (Li et al., 2018): ``alpha/2 · ||w - w_pretrained||²`` on transferred weights, so
  fine-tuning stays near the starting point instead of near zero (plain weight decay).
* :class:`EWC` (Kirkpatrick et al., 2017): the same pull weighted per parameter by the diagonal
  Fisher information estimated on source-site data, so weights the source task relies on move least.

Both are callables ``penalty(model) -> tensor`` added to the training loss.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from monai.losses import DiceCELoss

__all__ = ["L2SP", "EWC", "fisher_diagonal"]


class L2SP:
    """``alpha/2 · Σ (w - w0)²`` over the parameters present in ``reference``."""

    def __init__(self, reference: dict[str, torch.Tensor], alpha: float) -> None:
        self.reference = {k: v.detach().clone() for k, v in reference.items()}
        self.alpha = alpha

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        terms = [((p - self.reference[n].to(p.device)) ** 2).sum()
                 for n, p in model.named_parameters() if n in self.reference and p.requires_grad]
        zero = next(model.parameters()).new_zeros(())
        return 0.5 * self.alpha * (torch.stack(terms).sum() if terms else zero)


def fisher_diagonal(model: torch.nn.Module, loader: Iterable[dict], device: torch.device) -> dict[str, torch.Tensor]:
    """Mean squared gradient of the segmentation loss per parameter over ``loader`` (source data)."""
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    model.to(device).eval()
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    batches = 0
    for batch in loader:
        model.zero_grad(set_to_none=True)
        loss_fn(model(batch["image"].to(device)), batch["label"].to(device).long()).backward()
        for n, p in model.named_parameters():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2
        batches += 1
    model.zero_grad(set_to_none=True)
    return {n: f / max(batches, 1) for n, f in fisher.items()}


class EWC:
    """``lam/2 · Σ F · (w - w0)²`` with ``F`` the source Fisher diagonal."""

    def __init__(self, reference: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor], lam: float) -> None:
        self.reference = {k: v.detach().clone() for k, v in reference.items()}
        self.fisher = {k: v / (v.max() + 1e-12) for k, v in fisher.items()}  # scale-free weights
        self.lam = lam

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        terms = [(self.fisher[n].to(p.device) * (p - self.reference[n].to(p.device)) ** 2).sum()
                 for n, p in model.named_parameters() if n in self.reference and n in self.fisher and p.requires_grad]
        zero = next(model.parameters()).new_zeros(())
        return 0.5 * self.lam * (torch.stack(terms).sum() if terms else zero)
