"""Self-supervised continued pretraining on the target site's images: masked-volume inpainting.

Before any labelled case trains the network, its encoder learns the target site's own images: in
each target patch a random half of a 4 × 4 × 4 grid of cubes is replaced by Gaussian noise, and the
network, with a 1 × 1 × 1 convolution from its output channels to the image's channels appended,
is trained to restore the original intensities there (L1 over the replaced voxels only, so that
the skip connections cannot copy the answer through). This is the inpainting pretext of Models
Genesis (Zhou et al., 2021) and of MONAI's self-supervised SwinUNETR recipe, continued on the
target site as in domain-adaptive pretraining.

Afterwards only the **encoder blocks** (:mod:`tl_med.adapt.blocks`) keep what they learnt,
batch-norm statistics included; the decoder and the segmentation head are restored to the source
model's weights, as self-supervised weights are transferred in those recipes. The moved encoder no
longer matches the source's decoder, so the step must be followed by supervised training: the
target's labelled cases, or the source's labels under a step that trains on them (``coral``,
``mean_teacher``). With neither, :func:`tl_med.adapt.run.adapt_model` refuses it.

Example:
    >>> # history = inpaint(model, target_patches, device, steps=100, lr=1e-3)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from tl_med.adapt.blocks import network_blocks
from tl_med.adapt.uda import _cycle

__all__ = ["inpaint", "mask_cubes", "GRID"]

GRID = 4  # cubes per axis
_MASKED = 0.5  # share of the cubes replaced


def mask_cubes(image: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` with a random half of a ``GRID``³ grid of cubes replaced by N(0, 1) noise (drawn
    per sample), and the mask of replaced voxels (shape of one channel, broadcast over channels)."""
    b, _, *spatial = image.shape
    cells = (torch.rand(b, 1, *([GRID] * len(spatial)), generator=generator) < _MASKED).float()
    mask = torch.nn.functional.interpolate(cells, size=tuple(spatial), mode="nearest").to(image.device)
    noise = torch.randn(image.shape, generator=generator).to(image.device)
    return image * (1 - mask) + noise * mask, mask


def _encoder_keys(model: torch.nn.Module) -> set[str]:
    """State-dict keys (parameters and buffers) of the modules in the encoder blocks."""
    modules = {m for b in network_blocks(model) if b.encoder for m in b.modules}
    return {key for key in model.state_dict() if key.rpartition(".")[0] in modules}


def inpaint(model: torch.nn.Module, loader: Iterable[dict], device: torch.device, *, steps: int, lr: float,
            seed: int = 0) -> list[float]:
    """Train ``model`` on masked-volume inpainting of the target batches in ``loader`` for ``steps``
    optimizer steps, then restore everything outside its encoder blocks to what it was; returns
    each step's loss (mean absolute error over the replaced voxels)."""
    keep = _encoder_keys(model)
    if not keep:
        raise ValueError(f"inpainting: {type(model).__name__} has no encoder block to pretrain")
    before = {k: v.detach().clone() for k, v in model.state_dict().items() if k not in keep}
    model.to(device).eval()
    with torch.no_grad():  # how many channels the network puts out (eval: one sample suits batch norm)
        probe = next(iter(loader))["image"][:1].to(device)
        out_channels = model(probe).shape[1]
    model.train()
    generator = torch.Generator().manual_seed(seed)
    head = getattr(torch.nn, f"Conv{probe.ndim - 2}d")(out_channels, probe.shape[1], kernel_size=1).to(device)
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=lr)
    history: list[float] = []
    batches = _cycle(loader)
    try:
        for _ in range(steps):
            image = next(batches)["image"].to(device)
            masked, mask = mask_cubes(image, generator)
            restored = head(model(masked))
            loss = ((restored - image).abs() * mask).sum() / (mask.sum() * image.shape[1]).clamp_min(1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history.append(float(loss.detach()))
    finally:
        model.load_state_dict(before, strict=False)
        model.eval()
    return history
