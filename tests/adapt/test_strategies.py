"""Each strategy does what it says (which weights move, at which rate, from which epoch) on every
network of the catalogue, with layer groups derived from the network's own structure."""

import pytest
import torch

from tl_med.adapt.blocks import bottleneck_module, network_blocks
from tl_med.adapt.strategies import FeatureExtraction, FineTune, ProgressiveUnfreeze
from tl_med.catalogue import NETWORKS
from tl_med.config import NetworkConfig
from tl_med.models.zoo import build_network

# the smallest member of each network family; SwinUNETR's feature size is a multiple of 12
TINY = {"UNet": {"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 0},
        "DynUNet": {"channels": (4, 8, 16), "strides": (2, 2)},
        "SegResNet": {"channels": (4, 8, 16), "strides": (2, 2)},
        "AttentionUnet": {"channels": (4, 8, 16), "strides": (2, 2), "norm": "batch"},
        "SwinUNETR": {"channels": (12,), "strides": (), "norm": "batch"},
        # a network outside the catalogue, as a MONAI bundle would define it
        "bundle": {"definition": {"_target_": "BasicUNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                                  "features": [4, 4, 8, 8, 16, 4], "norm": ["batch", {}]}}}
PATCH = {"SwinUNETR": 32}  # its input must be divisible by 32; the others take 16³


def tiny_network(name: str = "UNet", norm: str | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = dict(TINY[name])
    if norm:
        kwargs["norm"] = norm
    return build_network(NetworkConfig(name=name, **kwargs))


def tiny_input(name: str = "UNet", batch: int = 2) -> torch.Tensor:
    size = PATCH.get(name, 16)
    return torch.randn(batch, 1, size, size, size)


def _net(norm: str = "instance") -> torch.nn.Module:
    return tiny_network("UNet", norm)


def _step(net: torch.nn.Module, groups: list[dict], name: str = "UNet") -> dict[str, torch.Tensor]:
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.SGD(groups, lr=0.1)
    net(tiny_input(name)).square().mean().backward()
    opt.step()
    return before


def _moved(net, before) -> set[str]:
    return {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}


def test_every_catalogue_network_has_a_tiny_test_configuration():
    assert set(TINY) == set(NETWORKS)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_blocks_cover_every_parameter_once_from_encoder_to_head(name):
    net = tiny_network(name)
    blocks = network_blocks(net)
    names = [n for b in blocks for n in b.names]
    assert sorted(names) == sorted(n for n, _ in net.named_parameters()) and len(names) == len(set(names))
    kinds = [b.kind for b in blocks]
    assert kinds[0] == "encoder" and kinds[-1] == "head" and "decoder" in kinds
    assert kinds == sorted(kinds, key=["encoder", "decoder", "head"].index)  # encoder, then decoder, then head
    assert [b.depth for b in blocks] == list(range(len(blocks) - 1, -1, -1))
    encoder = [b for b in blocks if b.encoder]
    assert encoder[-1].voxels == min(b.voxels for b in blocks)  # the encoder ends at the bottleneck
    features = {}
    bottleneck_module(net).register_forward_hook(lambda m, i, o: features.setdefault("out", o))
    net.eval()
    with torch.no_grad():
        net(tiny_input(name, 1))
    assert features["out"].ndim == 5  # a feature map CORAL can align


@pytest.mark.parametrize("name", list(NETWORKS))
def test_feature_extraction_freezes_the_encoder_and_trains_the_decoder(name):
    net = tiny_network(name)
    blocks = network_blocks(net)
    before = _step(net, FeatureExtraction(lr=0.1).param_groups(net), name)
    encoder = {n for b in blocks if b.encoder for n in b.names}
    moved = _moved(net, before)
    assert not moved & encoder and moved >= set(blocks[-1].names)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_finetune_gives_layerwise_rates_and_covers_every_parameter_once(name):
    net = tiny_network(name)
    groups = FineTune(lr=1e-2, layer_decay=0.5).param_groups(net)
    lrs = [g["lr"] for g in groups]
    assert lrs == sorted(lrs) and lrs[-1] == 1e-2 and lrs[0] == 1e-2 * 0.5 ** (len(groups) - 1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    assert groups[-1]["block"] == "head0" and groups[0]["block"].startswith("encoder")  # head fastest


@pytest.mark.parametrize("name", list(NETWORKS))
def test_progressive_unfreezing_follows_its_schedule(name):
    net = tiny_network(name)
    strategy = ProgressiveUnfreeze(lr=0.1, every=2)
    groups = strategy.param_groups(net)
    blocks = network_blocks(net)
    n = len(blocks)
    for epoch in (0, 1, 2, 4, 8, 2 * n + 10):
        expected = min(n, 1 + epoch // 2)
        strategy.on_epoch_start(epoch, net)
        params = dict(net.named_parameters())
        trainable = [all(params[p].requires_grad for p in b.names) for b in blocks]
        assert trainable == [False] * (n - expected) + [True] * expected, epoch
    strategy.on_epoch_start(0, net)
    before = _step(net, groups, name)
    assert _moved(net, before) <= set(blocks[-1].names)  # only the head moved in epoch 0


def test_a_network_without_convolutions_is_a_clear_error():
    with pytest.raises(ValueError, match="has no convolution"):
        network_blocks(torch.nn.Sequential(torch.nn.Linear(4, 2)))


class _ScaledTied(torch.nn.Module):
    """A bundle-style network with a parameter on the root module (an input scale, used first)
    and one weight shared by two convolutions (tied weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.down = torch.nn.Conv3d(1, 4, 3, stride=2, padding=1)
        self.mid = torch.nn.Conv3d(4, 4, 3, padding=1)
        self.mid2 = torch.nn.Conv3d(4, 4, 3, padding=1)
        self.mid2.weight = self.mid.weight
        self.up = torch.nn.ConvTranspose3d(4, 4, 2, stride=2)
        self.out = torch.nn.Conv3d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.up(self.mid2(self.mid(self.down(x * self.scale)))))


def test_root_parameters_join_the_input_side_and_tied_weights_are_counted_once():
    net = _ScaledTied()
    blocks = network_blocks(net)
    names = [n for b in blocks for n in b.names]
    assert sorted(names) == sorted(n for n, _ in net.named_parameters()) and len(names) == len(set(names))
    assert "scale" in blocks[0].names and blocks[-1].names == ("out.weight", "out.bias")  # the head is the output
    groups = FineTune(lr=1e-2, layer_decay=0.5).param_groups(net)  # no KeyError for the tied name
    assert len([p for g in groups for p in g["params"]]) == len(list(net.parameters()))
