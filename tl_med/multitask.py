"""Multi-task learning: one shared encoder, a segmentation head and a case-level classification head.

:func:`attach_class_head` gives any segmentation network of the catalogue a :class:`ClassHead`
(global average pooling of the bottleneck's feature map, dropout, a linear layer). The network's
own forward pass is unchanged (it still returns segmentation logits, so sliding windows, packages
and exports work as before); a forward hook keeps the bottleneck's features, and
``head.logits()`` turns the last pass's features into class logits. The head never runs in the
network's forward pass, so the layer blocks (:mod:`tl_med.adapt.blocks`) put it with the output
head: trained at the full rate, first to unfreeze.

Training adds ``class_weight · cross-entropy`` over the patches whose case has a class
(:func:`class_loss`; ``class`` -1 means none). A case's class probabilities
(:func:`case_class_probabilities`) average the softmax of every sliding window over the whole
preprocessed image, each window weighted by how much foreground the network segments in it, so the
evidence comes from where the organ is.

Example:
    >>> from tl_med.config import NetworkConfig
    >>> from tl_med.models.zoo import build_network
    >>> net = build_network(NetworkConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=0))
    >>> head = attach_class_head(net, 2)
    >>> _ = net(torch.zeros(1, 1, 16, 16, 16))
    >>> tuple(head.logits().shape)
    (1, 2)
"""

from __future__ import annotations

import numpy as np
import torch

from tl_med.adapt.blocks import bottleneck_module, probe_pass

__all__ = ["ClassHead", "attach_class_head", "class_head", "class_loss", "windowed", "case_class_probabilities",
           "HEAD_NAME"]

HEAD_NAME = "class_head"


class ClassHead(torch.nn.Module):
    """Pooling, dropout and a linear layer over the bottleneck features of the last forward pass."""

    def __init__(self, channels: int, n_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.pool = torch.nn.AdaptiveAvgPool3d(1)
        self.drop = torch.nn.Dropout(dropout)
        self.fc = torch.nn.Linear(channels, n_classes)
        self.features: torch.Tensor | None = None

    def logits(self) -> torch.Tensor:
        if self.features is None:
            raise RuntimeError("no forward pass of the network yet: its bottleneck features are missing")
        return self.fc(self.drop(self.pool(self.features).flatten(1)))


def _bottleneck_channels(model: torch.nn.Module, module: torch.nn.Module) -> int:
    seen: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda _m, _i, out: seen.__setitem__("out", out))
    try:
        probe_pass(model, seen.clear)
    finally:
        handle.remove()
    return int(seen["out"].shape[1])


def attach_class_head(model: torch.nn.Module, n_classes: int) -> ClassHead:
    """Add a :class:`ClassHead` as ``model.class_head`` (its state-dict keys ``class_head.*``), fed
    by a forward hook on the bottleneck; returns the head."""
    bottleneck = bottleneck_module(model)
    head = ClassHead(_bottleneck_channels(model, bottleneck), n_classes)
    param = next(model.parameters())
    head.to(device=param.device, dtype=param.dtype)
    model.add_module(HEAD_NAME, head)

    def keep(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        if not torch.compiler.is_exporting():  # an exported (logged) model is the segmentation graph
            head.features = output

    bottleneck.register_forward_hook(keep)
    return head


def class_head(model: torch.nn.Module) -> ClassHead | None:
    head = getattr(model, HEAD_NAME, None)
    return head if isinstance(head, ClassHead) else None


def class_loss(model: torch.nn.Module, classes: torch.Tensor) -> torch.Tensor | None:
    """Cross-entropy of the last forward pass's class logits against ``classes`` (-1: none);
    ``None`` when the model has no head or no sample has a class."""
    head = class_head(model)
    if head is None:
        return None
    known = classes >= 0
    if not bool(known.any()):
        return None
    logits = head.logits()
    return torch.nn.functional.cross_entropy(logits[known].float(), classes[known].long())


@torch.no_grad()
def windowed(model: torch.nn.Module, image: torch.Tensor, window) -> tuple[torch.Tensor, np.ndarray]:
    """One sliding-window pass over a preprocessed image (channel first): the segmentation logits
    (channel first, no batch axis) and the case's class probabilities, the mean of each window's
    softmax weighted by the foreground share the network segments in that window (plain mean when
    it segments none)."""
    head = class_head(model)
    if head is None:
        raise ValueError("the model has no class head")
    probs: list[torch.Tensor] = []
    weights: list[torch.Tensor] = []

    def network(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        probs.append(torch.softmax(head.logits().float(), dim=1))
        weights.append(1.0 - torch.softmax(out.float(), dim=1)[:, 0].flatten(1).mean(dim=1))
        return out

    model.eval()
    param = next(model.parameters())
    logits = window(image[None].to(param.device), network)[0].float().cpu()
    p, w = torch.cat(probs), torch.cat(weights)
    if float(w.sum()) <= 1e-6:
        w = torch.ones_like(w)
    return logits, ((p * w[:, None]).sum(dim=0) / w.sum()).cpu().numpy()


def case_class_probabilities(model: torch.nn.Module, image: torch.Tensor, window) -> np.ndarray:
    """The class probabilities of :func:`windowed`."""
    return windowed(model, image, window)[1]
