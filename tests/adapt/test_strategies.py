"""Each strategy does what it says: which weights move, at which rate, from which epoch."""

import torch

from tl_med.adapt.blocks import unet_blocks
from tl_med.adapt.strategies import FeatureExtraction, FineTune, ProgressiveUnfreeze
from tl_med.config import NetworkConfig
from tl_med.models.zoo import build_network


def _net(norm: str = "instance") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(NetworkConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=0, norm=norm))


def _step(net: torch.nn.Module, groups: list[dict]) -> dict[str, torch.Tensor]:
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.SGD(groups, lr=0.1)
    x = torch.randn(2, 1, 16, 16, 16)
    net(x).square().mean().backward()
    opt.step()
    return before


def _moved(net, before) -> set[str]:
    return {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}


def test_feature_extraction_freezes_the_encoder_and_trains_the_decoder():
    net = _net()
    blocks = unet_blocks(net)
    before = _step(net, FeatureExtraction(lr=0.1).param_groups(net))
    encoder = {n for b in blocks if b.encoder for n in b.names}
    decoder = {n for b in blocks if not b.encoder for n in b.names}
    moved = _moved(net, before)
    assert not moved & encoder and moved >= {n for n in decoder if n.endswith("weight") and "conv" in n}


def test_finetune_gives_layerwise_rates_and_covers_every_parameter_once():
    net = _net()
    groups = FineTune(lr=1e-2, layer_decay=0.5).param_groups(net)
    lrs = [g["lr"] for g in groups]
    assert lrs == sorted(lrs) and lrs[-1] == 1e-2 and lrs[0] == 1e-2 * 0.5 ** (len(groups) - 1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    assert groups[-1]["block"] == "up0" and groups[0]["block"] == "down0"  # head fastest, input slowest


def test_progressive_unfreezing_follows_its_schedule():
    net = _net()
    strategy = ProgressiveUnfreeze(lr=0.1, every=2)
    groups = strategy.param_groups(net)
    blocks = unet_blocks(net)
    for epoch, expected in ((0, 1), (1, 1), (2, 2), (4, 3), (8, 5), (30, 5)):
        strategy.on_epoch_start(epoch, net)
        params = dict(net.named_parameters())
        trainable = [all(params[n].requires_grad for n in b.names) for b in blocks]
        assert trainable == [False] * (len(blocks) - expected) + [True] * expected, epoch
    strategy.on_epoch_start(0, net)
    before = _step(net, groups)
    assert _moved(net, before) <= set(blocks[-1].names)  # only the head moved in epoch 0
