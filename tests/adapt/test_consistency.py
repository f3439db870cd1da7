"""Consistency test-time adaptation: it moves only the norm layers, towards agreement under flips."""

import pytest
import torch

from tl_med.adapt.consistency import _flip_ensemble, consistency_tta
from tl_med.adapt.uda import norm_layers
from tests.adapt.test_strategies import _net
from tests.adapt.test_uda import CPU, _batches, state_twice


def _disagreement(net: torch.nn.Module, batches: list[dict]) -> float:
    """Mean soft cross-entropy of the plain prediction against the flip ensemble (train-mode norms)."""
    net.train()
    with torch.no_grad():
        total = 0.0
        for b in batches:
            target = _flip_ensemble(net, b["image"])
            total += float(-(target * torch.log_softmax(net(b["image"]), dim=1)).sum(dim=1).mean())
    net.eval()
    return total / len(batches)


def test_consistency_tta_lowers_flip_disagreement_and_only_touches_norm_affine_parameters():
    net = _net("batch")
    norm_params = {id(p) for m in norm_layers(net) for p in (m.weight, m.bias)}
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    batches = _batches(n=2, shift=1.0)
    start = _disagreement(net, batches)
    history = consistency_tta(net, batches, CPU, steps=20, lr=1e-2)
    assert len(history) == 20 and all(h == h for h in history)
    assert _disagreement(net, batches) < start
    changed = [n for n, p in net.named_parameters() if not torch.equal(p, before[n])]
    assert changed and all(id(dict(net.named_parameters())[n]) in norm_params for n in changed)
    assert not net.training and all(p.requires_grad for p in net.parameters())


def test_consistency_tta_is_deterministic_and_refuses_a_network_without_batch_norm():
    assert torch.equal(*state_twice(lambda net: consistency_tta(net, _batches(n=2), CPU, steps=3, lr=1e-2, seed=5)))
    with pytest.raises(ValueError, match="consistency test-time adaptation needs batch-norm layers"):
        consistency_tta(_net("instance"), _batches(n=1), CPU, steps=1, lr=1e-2)
