"""Domain-adaptation steps that learn from unlabelled target images.

* :func:`adabn` (Li et al., 2016): re-estimate every batch-norm layer's running statistics on the
  target site; no weight changes.
* :func:`tent` (Wang et al., 2021): minimise the entropy of the predictions on target images,
  updating only the norm layers' affine parameters (batch statistics of the target batches);
  :func:`tl_med.adapt.consistency.consistency_tta` trains the same parameters towards the flip
  ensemble's prediction instead.
* :class:`CoralLoss` (Sun & Saenko, 2016): Deep CORAL on the bottleneck features: the distance
  between the covariance of the labelled batch's features and of a target batch's features.
* :func:`pseudo_labels`: self-training: predict unlabelled target cases and keep those whose
  predicted foreground is confident (mean max-probability over it above the threshold).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

from tl_med.adapt.blocks import bottleneck_module

__all__ = ["adabn", "tent", "CoralLoss", "pseudo_labels", "norm_layers", "norm_affine"]

_BN = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


def norm_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, _BN)]


@torch.no_grad()
def adabn(model: torch.nn.Module, loader: Iterable[dict], device: torch.device) -> int:
    """Replace batch-norm running statistics by the target images' (cumulative average); returns
    the number of layers re-estimated. Weights and affine parameters are untouched."""
    layers = norm_layers(model)
    if not layers:
        raise ValueError("AdaBN needs batch-norm layers (network.norm: batch)")
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over all target batches
    model.to(device).train()
    seen = 0
    for batch in loader:
        model(batch["image"].to(device))
        seen += 1
    model.eval()
    if not seen:
        raise ValueError("AdaBN got no target images: the statistics would be reset to defaults")
    return len(layers)


def tent(model: torch.nn.Module, loader: Iterable[dict], device: torch.device, *, steps: int,
         lr: float) -> list[float]:
    """Entropy minimisation on target images (norm affine parameters only); returns the entropy
    of each step."""
    params = norm_affine(model, "TENT")
    optimizer = torch.optim.Adam(params, lr=lr)
    model.to(device).train()
    history: list[float] = []
    batches = _cycle(loader)
    for _ in range(steps):
        probs = torch.softmax(model(next(batches)["image"].to(device)), dim=1)
        entropy = -(probs * torch.log(probs.clamp_min(1e-8))).sum(dim=1).mean()
        optimizer.zero_grad(set_to_none=True)
        entropy.backward()
        optimizer.step()
        history.append(float(entropy.detach()))
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return history


def norm_affine(model: torch.nn.Module, step: str) -> list[torch.nn.Parameter]:
    """Make the batch-norm layers' affine parameters the only trainable ones and return them
    (``ValueError`` naming ``step`` when the network has no batch norm)."""
    layers = norm_layers(model)
    if not layers:
        raise ValueError(f"{step} needs batch-norm layers (network.norm: batch)")
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for m in layers for p in (m.weight, m.bias) if p is not None]
    for p in params:
        p.requires_grad_(True)
    return params


def _cycle(loader: Iterable[dict]) -> Iterator[dict]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("no unlabelled target images to adapt on")


def _coral(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # covariances in float32 even under mixed precision (fp16 sums of squares overflow)
    with torch.autocast(a.device.type, enabled=False):
        a, b = a.float(), b.float()
        d = a.shape[1]
        ca = torch.cov(a.T) if a.shape[0] > 1 else a.new_zeros((d, d))
        cb = torch.cov(b.T) if b.shape[0] > 1 else b.new_zeros((d, d))
        return ((ca - cb) ** 2).sum() / (4 * d * d)


class CoralLoss:
    """``weight · CORAL(features of the last labelled batch, features of a target batch)``.

    Features are the bottleneck's output, captured by a forward hook; every spatial position is
    a sample, so small batches still give a covariance.
    """

    def __init__(self, model: torch.nn.Module, target: Iterable[dict], device: torch.device,
                 weight: float) -> None:
        self.module = bottleneck_module(model)
        self.target, self.device, self.weight = _cycle(target), device, weight
        self.captured: torch.Tensor | None = None
        self.handle = self.module.register_forward_hook(self._hook)

    def _hook(self, _module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        self.captured = output.flatten(2).transpose(1, 2).reshape(-1, output.shape[1])

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        source = self.captured
        assert source is not None, "CoralLoss needs a labelled forward pass first"
        model(next(self.target)["image"].to(self.device))
        target = self.captured
        return self.weight * _coral(source, target)

    def close(self) -> None:
        self.handle.remove()


@torch.no_grad()
def pseudo_labels(model: torch.nn.Module, loader: Iterable[dict], device: torch.device,
                  threshold: float, *, infer: Callable[[torch.Tensor, torch.nn.Module], torch.Tensor]) -> list[dict]:
    """Preprocessed ``{image, label, case_id}`` items for the confident unlabelled cases (whole
    images predicted with ``infer``, e.g. a sliding window)."""
    model.to(device).eval()
    kept = []
    for batch in loader:
        probs = torch.softmax(infer(batch["image"].to(device), model), dim=1)
        conf, label = probs.max(dim=1, keepdim=True)
        for i in range(label.shape[0]):
            fg = label[i] > 0
            if fg.any() and float(conf[i][fg].mean()) >= threshold:
                kept.append({"image": batch["image"][i].cpu(), "label": label[i].cpu(),
                             "case_id": batch["case_id"][i]})
    return kept
