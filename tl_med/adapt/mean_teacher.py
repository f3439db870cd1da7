"""Mean teacher: self-ensembling domain adaptation on unlabelled target images.

While the network trains on the labelled cases (the source's, and the target's when there are
any), a *teacher*, the exponential moving average of the network's weights, predicts target patches
under one intensity perturbation and the network is pulled towards that prediction under another
(Tarvainen & Valpola, NeurIPS 2017; for segmentation across MR sites: Perone et al., "Unsupervised
domain adaptation for medical imaging segmentation with self-ensembling", NeuroImage 2019).
The consistency weight ramps up (sigmoid) over the first ``rampup`` steps, as in both papers.

The teacher is rebuilt from the network when a resumed fit starts, so this step resumes without
the bit-for-bit guarantee (like CORAL's target batches).

Example:
    >>> # loss = MeanTeacherLoss(model, target_patches, device, weight=1.0)
    >>> # fit(..., extra_losses=[loss])  # adds the consistency term after each labelled forward pass
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch

from tl_med.adapt.uda import _cycle

__all__ = ["MeanTeacherLoss"]


class MeanTeacherLoss:
    """``weight · ramp · MSE(softmax(student(view 1)), softmax(teacher(view 2)))`` on a target batch
    per call; the teacher then moves towards the student by ``1 - ema``."""

    def __init__(self, model: torch.nn.Module, target: Iterable[dict], device: torch.device, weight: float,
                 ema: float = 0.99, rampup: int = 200, seed: int = 0) -> None:
        self.teacher = copy.deepcopy(model).to(device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.target, self.device = _cycle(target), device
        self.weight, self.ema, self.rampup = weight, ema, rampup
        self.calls = 0
        self.generator = torch.Generator().manual_seed(seed)

    def _view(self, image: torch.Tensor) -> torch.Tensor:
        """A random intensity perturbation per sample: scale, shift and noise."""
        n = image.shape[0]
        shape = (n,) + (1,) * (image.ndim - 1)
        scale = 1 + 0.2 * (torch.rand(shape, generator=self.generator) - 0.5)
        shift = 0.2 * (torch.rand(shape, generator=self.generator) - 0.5)
        noise = 0.05 * torch.randn(image.shape, generator=self.generator)
        return (image * scale + shift + noise).to(self.device)

    def ramp(self) -> float:
        t = min(1.0, self.calls / max(self.rampup, 1))
        return math.exp(-5.0 * (1.0 - t) ** 2)

    @torch.no_grad()
    def _update_teacher(self, model: torch.nn.Module) -> None:
        for t, s in zip(self.teacher.parameters(), model.parameters()):
            t.mul_(self.ema).add_(s.detach(), alpha=1 - self.ema)
        for t, s in zip(self.teacher.buffers(), model.buffers()):
            t.copy_(s)  # batch-norm statistics follow the student's

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        image = next(self.target)["image"]
        with torch.no_grad():
            teacher = torch.softmax(self.teacher(self._view(image)), dim=1)
        student = torch.softmax(model(self._view(image)), dim=1)
        loss = self.weight * self.ramp() * torch.mean((student - teacher) ** 2)
        self._update_teacher(model)
        self.calls += 1
        return loss
