"""Domain-adaptation steps and regularisers, each checked for the one thing it promises."""

import numpy as np
import torch
from monai.data import MetaTensor

from tl_med.adapt.regularisers import EWC, L2SP, fisher_diagonal
from tl_med.adapt.uda import CoralLoss, adabn, norm_layers, pseudo_labels, tent
from tl_med.data.harmonise import HarmoniseToSourced, _landmarks, fit_landmarks
from tests.adapt.test_strategies import _net

CPU = torch.device("cpu")


def state_twice(adapt) -> list[torch.Tensor]:
    """Every weight and buffer of a batch-norm network after ``adapt(net)``, run twice from the same
    start: a deterministic step gives two equal tensors."""
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        net = _net("batch")
        adapt(net)
        runs.append(torch.cat([v.float().flatten() for v in net.state_dict().values()]))
    return runs


def _batches(n=3, shift=0.0, scale=1.0, labels=False):
    g = torch.Generator().manual_seed(1)
    out = []
    for k in range(n):
        item = {"image": torch.randn(2, 1, 16, 16, 16, generator=g) * scale + shift, "case_id": [f"a{k}", f"b{k}"]}
        if labels:
            item["label"] = (torch.rand(2, 1, 16, 16, 16, generator=g) > 0.7).float()
        out.append(item)
    return out


def test_adabn_changes_statistics_and_not_weights():
    net = _net("batch")
    weights = {n: p.detach().clone() for n, p in net.named_parameters()}
    before = [m.running_mean.clone() for m in norm_layers(net)]
    assert adabn(net, _batches(shift=3.0, scale=2.0), CPU) == len(before)
    after = [m.running_mean for m in norm_layers(net)]
    assert all(not torch.allclose(a, b) for a, b in zip(before, after))
    assert all(torch.equal(p, weights[n]) for n, p in net.named_parameters())


def test_tent_lowers_entropy_and_only_touches_norm_affine_parameters():
    net = _net("batch")
    norm_params = {id(p) for m in norm_layers(net) for p in (m.weight, m.bias)}
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    history = tent(net, _batches(n=2, shift=1.0), CPU, steps=15, lr=1e-2)
    assert history[-1] < history[0]
    for n, p in net.named_parameters():
        assert torch.equal(p, before[n]) or id(p) in norm_params, n


def test_coral_is_zero_for_one_domain_and_positive_across_domains():
    net = _net()
    same = CoralLoss(net, _batches(), CPU, weight=1.0)
    net(_batches()[0]["image"])
    zero = same(net)
    same.close()
    other = CoralLoss(net, _batches(shift=5.0, scale=4.0), CPU, weight=1.0)
    net(_batches()[0]["image"])
    loss = other(net)
    other.close()
    assert float(zero.detach()) < 1e-9 < float(loss.detach())
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_pseudo_labels_keep_only_confident_cases():
    class Confident(torch.nn.Module):
        def forward(self, x):
            fg = (x > 0).float()
            return torch.cat([-(fg * 10), fg * 10], dim=1)  # very sure where x > 0

    class Unsure(Confident):
        def forward(self, x):
            return super().forward(x) * 0.01

    batches = _batches(n=1)
    whole = lambda image, model: model(image)  # noqa: E731 - these known-answer nets take any size
    assert len(pseudo_labels(Confident(), batches, CPU, threshold=0.9, infer=whole)) == 2
    assert pseudo_labels(Unsure(), batches, CPU, threshold=0.9, infer=whole) == []


def test_l2sp_pulls_towards_the_pretrained_weights():
    net = _net()
    reference = {n: p.detach().clone() for n, p in net.named_parameters()}
    penalty = L2SP(reference, alpha=1.0)
    assert float(penalty(net).detach()) == 0.0
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5)
    far = float(penalty(net).detach())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    penalty(net).backward()
    opt.step()
    assert 0 < float(penalty(net).detach()) < far


def test_ewc_weights_the_pull_by_the_source_fisher():
    net = _net()
    reference = {n: p.detach().clone() for n, p in net.named_parameters()}
    fisher = fisher_diagonal(net, _batches(n=2, labels=True), CPU)
    assert all((f >= 0).all() for f in fisher.values()) and any(f.sum() > 0 for f in fisher.values())
    ewc = EWC(reference, fisher, lam=1.0)
    assert float(ewc(net).detach()) == 0.0
    important = max(fisher, key=lambda n: float(fisher[n].max()))
    with torch.no_grad():
        dict(net.named_parameters())[important].add_(1.0)
    assert float(ewc(net).detach()) > 0


def test_histogram_standardisation_maps_a_scanner_curve_back_to_the_source():
    rng = np.random.default_rng(0)
    source = [rng.gamma(4.0, 50.0, (20, 20, 20)) for _ in range(3)]
    marks = fit_landmarks(source)
    target = rng.gamma(4.0, 50.0, (20, 20, 20)) * 0.5 - 300  # another slope and intercept
    image = MetaTensor(torch.as_tensor(target[None], dtype=torch.float32), affine=torch.diag(torch.tensor([2.0, 2, 2, 1])))
    out = HarmoniseToSourced(keys="image", landmarks=marks)({"image": image})["image"]
    np.testing.assert_allclose(_landmarks(out.numpy()), marks, rtol=0.05, atol=5)
    assert torch.equal(out.affine, image.affine)
