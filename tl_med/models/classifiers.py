"""Case-level classifiers from ``monai.networks.nets``, one builder per name of
:data:`tl_med.catalogue.CLASSIFIERS`.

``width`` sizes every network the same way (64: the published networks): DenseNet121's initial
features (its growth rate is half of it), the ResNets' first stage (then 2, 4 and 8 times it). The
ResNets keep MONAI's MedicalNet layout (``conv1``, ``bn1``, ``layer1`` … ``fc``; 7³ stem, stride 2
with a max-pool), so a MedicalNet checkpoint loads through :func:`tl_med.models.pretrained.load_state`
(``state_dict``/``module.`` wrappers unwrapped) into a ``width`` 64 network, all but its new ``fc``.

Example:
    >>> from tl_med.config import ClassifierConfig
    >>> net = build_classifier(ClassifierConfig(network="ResNet10", width=4), in_channels=1, n_classes=2)
    >>> tuple(net(torch.zeros(1, 1, 16, 16, 16)).shape)
    (1, 2)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.nets import DenseNet, ResNet
from monai.networks.nets.resnet import get_medicalnet_pretrained_resnet_args

from tl_med.catalogue import CLASSIFIERS
from tl_med.config import ClassifierConfig

__all__ = ["build_classifier", "BUILDERS"]


def _densenet121(cfg: ClassifierConfig, in_channels: int, n_classes: int) -> torch.nn.Module:
    return DenseNet(spatial_dims=3, in_channels=in_channels, out_channels=n_classes, init_features=cfg.width,
                    growth_rate=max(1, cfg.width // 2), block_config=(6, 12, 24, 16))


def _resnet(depth: int, layers: list[int]) -> Callable[[ClassifierConfig, int, int], torch.nn.Module]:
    # MedicalNet's shortcuts: parameter-free (A) at depths 18 and 34, 1³ convolutions without bias (B) else
    shortcut, bias = get_medicalnet_pretrained_resnet_args(depth)[::-1]

    def build(cfg: ClassifierConfig, in_channels: int, n_classes: int) -> torch.nn.Module:
        w = cfg.width
        return ResNet(block="basic", layers=layers, block_inplanes=[w, 2 * w, 4 * w, 8 * w], spatial_dims=3,
                      n_input_channels=in_channels, num_classes=n_classes, shortcut_type=shortcut,
                      bias_downsample=bias)
    return build


# a test holds these names and tl_med.catalogue.CLASSIFIERS together
BUILDERS: dict[str, Callable[[ClassifierConfig, int, int], torch.nn.Module]] = {
    "DenseNet121": _densenet121,
    "ResNet10": _resnet(10, [1, 1, 1, 1]),
    "ResNet18": _resnet(18, [2, 2, 2, 2]),
    "ResNet34": _resnet(34, [3, 4, 6, 3]),
}


def build_classifier(cfg: ClassifierConfig, *, in_channels: int, n_classes: int) -> torch.nn.Module:
    """The configured classifier for ``in_channels`` input channels and ``n_classes`` classes."""
    if cfg.network not in CLASSIFIERS:  # config validation already refuses it; a clear line regardless
        raise ValueError(f"unknown classifier '{cfg.network}' (known: {', '.join(CLASSIFIERS)})")
    return BUILDERS[cfg.network](cfg, in_channels, n_classes)
