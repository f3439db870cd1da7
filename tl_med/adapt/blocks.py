"""The blocks of a MONAI ``UNet`` in order from input to output, and which ones are the encoder.

MONAI's UNet nests each level as ``Sequential(down, SkipConnection(next level), up)``, so a
parameter name such as ``model.1.submodule.2.conv.weight`` reads: level 0 → descend → level 1,
``up`` layer. Down layers and the bottleneck are the encoder; up layers (the last one is the
segmentation head) are the decoder.

Example:
    >>> from tl_med.config import NetworkConfig
    >>> from tl_med.models.zoo import build_network
    >>> blocks = unet_blocks(build_network(NetworkConfig(channels=(4, 8, 16), strides=(2, 2))))
    >>> [b.kind for b in blocks]
    ['down', 'down', 'bottom', 'up', 'up']
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Block", "unet_blocks"]


@dataclass(frozen=True)
class Block:
    """One level's down layer, the bottleneck, or one level's up layer."""

    kind: str  # "down" | "bottom" | "up"
    depth: int
    names: tuple[str, ...]

    @property
    def encoder(self) -> bool:
        return self.kind != "up"


def _place(name: str) -> tuple[str, int]:
    tokens = name.split(".")
    depth = 0
    i = 0
    while i < len(tokens):
        if tokens[i] in ("model", "submodule") and i + 1 < len(tokens):
            nxt = tokens[i + 1]
            if nxt == "0":
                return "down", depth
            if nxt == "2":
                return "up", depth
            if nxt == "1":
                depth += 1
                i += 2
                continue
            return "bottom", depth
        i += 1
    return "bottom", depth


def unet_blocks(model: torch.nn.Module) -> list[Block]:
    """Blocks from input to output (down 0..D-1, bottom, up D-1..0); raises for non-UNet layouts."""
    found: dict[tuple[str, int], list[str]] = {}
    for name, _ in model.named_parameters():
        found.setdefault(_place(name), []).append(name)
    if not any(kind == "up" for kind, _ in found):
        raise ValueError(f"{type(model).__name__} does not have MONAI UNet's down/up layout")
    order = {"down": 0, "bottom": 1, "up": 2}
    ranked = sorted(found, key=lambda k: (order[k[0]], k[1] if k[0] != "up" else -k[1]))
    return [Block(kind, depth, tuple(found[(kind, depth)])) for kind, depth in ranked]
