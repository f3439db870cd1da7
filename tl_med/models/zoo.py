"""Build ``monai.networks.nets`` networks from a :class:`NetworkConfig`.

Example:
    >>> from tl_med.config import NetworkConfig
    >>> net = build_network(NetworkConfig(channels=(4, 8), strides=(2,)))
    >>> type(net).__name__
    'UNet'
"""

from __future__ import annotations

import torch
from monai.networks.nets import UNet

from tl_med.config import NetworkConfig

__all__ = ["build_network", "resolve_device"]


def build_network(cfg: NetworkConfig) -> torch.nn.Module:
    """A 3D segmentation network with one input channel and ``cfg.out_channels`` classes."""
    if cfg.name == "UNet":
        return UNet(spatial_dims=3, in_channels=1, out_channels=cfg.out_channels,
                    channels=cfg.channels, strides=cfg.strides, num_res_units=cfg.num_res_units,
                    dropout=cfg.dropout, norm=cfg.norm)
    raise ValueError(f"unknown network '{cfg.name}'")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
