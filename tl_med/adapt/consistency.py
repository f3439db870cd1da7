"""Consistency-based test-time adaptation: the model agrees with its own flip ensemble.

At each step a batch of unlabelled target patches is predicted under the identity and a flip of
each spatial axis; the mean of those (un-flipped) probabilities, without gradient, is the target.
The network then sees one randomly flipped, intensity-perturbed view of the batch and is trained
towards that target with a soft cross-entropy, updating only the norm layers' affine parameters
(batch statistics of the target batches), as TENT does. The flip ensemble is the classic
test-time augmentation of segmentation; adapting the model to agree across augmented views is the
idea of MEMO (Zhang, Levine & Finn, NeurIPS 2022, which minimises the entropy of the marginal
prediction over augmentations). Only the norm layers move, so that a few steps cannot rewrite what
the source model learnt.

Where the views agree, the step sharpens the prediction much as TENT does; where they disagree,
the target stays soft, so those voxels are not pushed towards either class. Like TENT, the forward
passes in training mode also move the batch-norm running statistics towards the target's.

Example:
    >>> # history = consistency_tta(model, target_patches, device, steps=10, lr=1e-4)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from tl_med.adapt.uda import _cycle, norm_affine

__all__ = ["consistency_tta"]


def _flip_ensemble(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Mean softmax over the identity and one flip per spatial axis (un-flipped)."""
    axes = range(2, image.ndim)
    views = [torch.softmax(model(image), dim=1)]
    views += [torch.softmax(model(image.flip(a)), dim=1).flip(a) for a in axes]
    return torch.stack(views).mean(dim=0)


def consistency_tta(model: torch.nn.Module, loader: Iterable[dict], device: torch.device, *, steps: int,
                    lr: float, seed: int = 0) -> list[float]:
    """Train the norm layers' affine parameters so that one perturbed view of each target batch
    predicts what the flip ensemble predicts; returns each step's loss (soft cross-entropy)."""
    params = norm_affine(model, "consistency test-time adaptation")
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    history: list[float] = []
    batches = _cycle(loader)
    try:
        for _ in range(steps):
            image = next(batches)["image"].to(device)
            with torch.no_grad():
                target = _flip_ensemble(model, image)
            axes = [a for a in range(2, image.ndim) if torch.rand(1, generator=generator) < 0.5]
            shape = (image.shape[0],) + (1,) * (image.ndim - 1)
            scale = (1 + 0.2 * (torch.rand(shape, generator=generator) - 0.5)).to(device)
            shift = (0.2 * (torch.rand(shape, generator=generator) - 0.5)).to(device)
            view = image * scale + shift
            logits = model(view.flip(axes)).flip(axes)  # no axis drawn: flip([]) is the identity
            loss = -(target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history.append(float(loss.detach()))
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
        model.eval()
    return history
