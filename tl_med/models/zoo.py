"""Build ``monai.networks.nets`` networks from a :class:`NetworkConfig`.

One builder per name of :data:`tl_med.catalogue.NETWORKS` maps the config onto that network's own
constructor arguments (:func:`network_arguments`); the same arguments become a MONAI bundle's
``network_def`` when a model is exported, so what is trained and what is shipped cannot differ.

Example:
    >>> from tl_med.config import NetworkConfig
    >>> net = build_network(NetworkConfig(channels=(4, 8), strides=(2,)))
    >>> type(net).__name__
    'UNet'
    >>> network_arguments(NetworkConfig(name="DynUNet", channels=(4, 8), strides=(2,)))["strides"]
    [1, 2]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import monai.networks.nets as nets
import torch

from tl_med.config import NetworkConfig

__all__ = ["BUILDERS", "network_arguments", "network_definition", "build_network", "resolve_device"]

def _unet(c: NetworkConfig) -> dict[str, Any]:
    return {"spatial_dims": 3, "in_channels": c.in_channels, "out_channels": c.out_channels, "channels": list(c.channels),
            "strides": list(c.strides), "num_res_units": c.num_res_units, "dropout": c.dropout, "norm": c.norm}


def _dynunet(c: NetworkConfig) -> dict[str, Any]:
    return {"spatial_dims": 3, "in_channels": c.in_channels, "out_channels": c.out_channels,
            "kernel_size": [3] * len(c.channels), "strides": [1, *c.strides], "upsample_kernel_size": list(c.strides),
            "filters": list(c.channels), "dropout": c.dropout or None,
            "norm_name": "batch" if c.norm == "batch" else ["instance", {"affine": True}], "res_block": True}


def _segresnet(c: NetworkConfig) -> dict[str, Any]:
    levels = len(c.channels)
    return {"spatial_dims": 3, "in_channels": c.in_channels, "out_channels": c.out_channels,
            "init_filters": c.channels[0], "dropout_prob": c.dropout or None,
            "norm": ["batch", {}] if c.norm == "batch" else ["instance", {"affine": True}],
            "blocks_down": [1, 2, 2, 4, 4, 4][:levels], "blocks_up": [1] * (levels - 1)}


def _attention_unet(c: NetworkConfig) -> dict[str, Any]:
    return {"spatial_dims": 3, "in_channels": c.in_channels, "out_channels": c.out_channels,
            "channels": list(c.channels), "strides": list(c.strides), "dropout": c.dropout}


def _swin_unetr(c: NetworkConfig) -> dict[str, Any]:
    return {"in_channels": c.in_channels, "out_channels": c.out_channels, "feature_size": c.channels[0],
            "norm_name": c.norm, "drop_rate": c.dropout, "spatial_dims": 3, "use_v2": True}


def _bundle(c: NetworkConfig) -> dict[str, Any]:
    return {k: v for k, v in (c.definition or {}).items() if k != "_target_"}


# one builder per name of tl_med.catalogue.NETWORKS (a test holds the two together)
BUILDERS: dict[str, Callable[[NetworkConfig], dict[str, Any]]] = {
    "UNet": _unet, "DynUNet": _dynunet, "SegResNet": _segresnet, "AttentionUnet": _attention_unet,
    "SwinUNETR": _swin_unetr, "bundle": _bundle,
}


def network_arguments(cfg: NetworkConfig) -> dict[str, Any]:
    """The constructor arguments of the network (JSON-serialisable)."""
    return BUILDERS[cfg.name](cfg)


def network_definition(cfg: NetworkConfig) -> dict[str, Any]:
    """The network as a MONAI config dict (``_target_`` and its arguments): a bundle's ``network_def``."""
    target = (cfg.definition or {}).get("_target_") if cfg.name == "bundle" else cfg.name
    return {"_target_": target, **network_arguments(cfg)}


def build_network(cfg: NetworkConfig) -> torch.nn.Module:
    """The configured network: a catalogue network with ``cfg.in_channels`` inputs and
    ``cfg.out_channels`` classes, or a bundle's own ``network_def``."""
    if cfg.name == "bundle":
        from tl_med.models.bundle_network import build_definition

        return build_definition(network_definition(cfg))
    return getattr(nets, cfg.name)(**network_arguments(cfg))


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
