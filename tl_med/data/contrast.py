"""Contrast augmentation: train a source model that does not depend on one scanner's tissue contrast.

A site whose tissue contrast differs from the source's (a T2-like inversion, another grey/white
order, a hypodense instead of a hyperdense organ) defeats a model that learnt the source's
intensities. These dictionary transforms randomise contrast during training so that shape and
texture carry the decision:

* :class:`RandInvertIntensityd`: the image mirrored within its own range (bright becomes dark);
* :class:`RandGINd`: global intensity non-linear augmentation (GIN; Ouyang et al., "Causality-
  inspired single-source domain generalization for medical image segmentation", IEEE TMI 2022):
  a shallow convolutional network with freshly drawn random weights per sample maps the image to a
  new contrast, rescaled to the input's norm and blended with it;
* :class:`RandLabelIntensityd`: the labelled organ moved to a random intensity level of its
  patch (SynthSeg/SLAug-style per-label intensities), so "brighter than its surroundings" is
  never a reliable cue;
* with MONAI's ``RandAdjustContrastd`` (gamma) and ``RandHistogramShiftd`` (a random monotone
  intensity curve) in :func:`contrast_augmentation`.

They act on training patches only (after ``RandCropByPosNegLabeld``), never on what is evaluated.

Example:
    >>> import torch
    >>> out = RandGINd(keys="image", prob=1.0).set_random_state(0)({"image": torch.rand(1, 8, 8, 8)})
    >>> out["image"].shape
    torch.Size([1, 8, 8, 8])
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import (Compose, Identityd, MapTransform, OneOf, RandAdjustContrastd, RandHistogramShiftd,
                              Randomizable)

__all__ = ["RandInvertIntensityd", "RandGINd", "RandLabelIntensityd", "contrast_augmentation"]


class RandInvertIntensityd(Randomizable, MapTransform):
    """With probability ``prob``, ``x -> max(x) + min(x) - x`` (per image channel)."""

    def __init__(self, keys: KeysCollection, prob: float = 0.3) -> None:
        MapTransform.__init__(self, keys)
        self.prob, self._do = prob, False

    def randomize(self, data: Any = None) -> None:
        self._do = self.R.random_sample() < self.prob

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        if self._do:
            for key in self.key_iterator(d):
                image = d[key]
                spatial = tuple(range(1, image.ndim))  # each channel within its own range
                d[key] = image.amax(dim=spatial, keepdim=True) + image.amin(dim=spatial, keepdim=True) - image
        return d


class RandGINd(Randomizable, MapTransform):
    """GIN: a random ``layers``-deep convolutional net (kernel 1 or 3, ``width`` channels, leaky
    ReLU, weights ~ N(0, 1) drawn per call) maps the image to a new contrast; the result is scaled
    to the input's Frobenius norm and blended with the input by a random ``alpha`` in [0, 1]."""

    def __init__(self, keys: KeysCollection, prob: float = 0.5, layers: int = 4, width: int = 2) -> None:
        MapTransform.__init__(self, keys)
        self.prob, self.layers, self.width = prob, layers, width
        self._do, self._seed, self._alpha = False, 0, 0.0

    def randomize(self, data: Any = None) -> None:
        self._do = self.R.random_sample() < self.prob
        self._seed = int(self.R.randint(0, 2**31 - 1))
        self._alpha = float(self.R.random_sample())

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self._seed)
        h = x[None].float()  # (1, C, *spatial)
        for layer in range(self.layers):
            out_ch = x.shape[0] if layer == self.layers - 1 else self.width
            k = 1 if torch.rand(1, generator=gen).item() < 0.5 else 3
            weight = torch.randn(out_ch, h.shape[1], *([k] * (x.ndim - 1)), generator=gen)
            conv = torch.nn.functional.conv3d if x.ndim == 4 else torch.nn.functional.conv2d
            h = conv(h, weight, padding=k // 2)
            if layer < self.layers - 1:
                h = torch.nn.functional.leaky_relu(h, 0.2)
        return h[0]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        if not self._do:
            return d
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key]).float()
            with torch.no_grad():
                new = self._net(image)
                new = new * (image.norm() / new.norm().clamp_min(1e-8))
                mixed = self._alpha * new + (1 - self._alpha) * image
                mixed = (mixed - mixed.mean()) / mixed.std().clamp_min(1e-6) * image.std() + image.mean()
            d[key] = mixed.to(image.dtype)
        return d


class RandLabelIntensityd(Randomizable, MapTransform):
    """With probability ``prob``, move the labelled structure's intensities to a random level of
    the patch's own range (between its 5th and 95th percentiles), keeping their texture: the
    organ may be brighter or darker than what surrounds it, as between CT phases or MR weightings
    (the per-label intensity randomisation of SynthSeg and SLAug): each label value its own level,
    each image channel on its own range. Needs the label (one channel of label values)."""

    def __init__(self, keys: KeysCollection, label_key: str = "label", prob: float = 0.3) -> None:
        MapTransform.__init__(self, keys)
        self.label_key, self.prob = label_key, prob
        self._do, self._level = False, 0.5

    def randomize(self, data: Any = None) -> None:
        self._do = self.R.random_sample() < self.prob
        self._level = float(self.R.random_sample())

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        if not self._do or self.label_key not in d:
            return d
        label = torch.as_tensor(d[self.label_key])[0]  # one label channel, one value per structure
        values = label[label > 0].unique().tolist()
        if not values:
            return d
        # one mask per structure; a binary label keeps its single ``> 0`` mask
        masks = [label > 0] if len(values) == 1 else [label == v for v in values]
        # each structure its own level, spread from the one drawn (golden-ratio steps: no extra draws)
        levels = [(self._level + 0.6180339887 * k) % 1.0 for k in range(len(masks))]
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key])
            moved = image.clone()
            for c, channel in enumerate(image):  # every image channel (modality) on its own range
                lo, hi = torch.quantile(channel.float().flatten(), torch.tensor([0.05, 0.95])).tolist()
                for inside, level in zip(masks, levels):
                    shift = lo + level * (hi - lo) - float(channel[inside].float().mean())
                    moved[c] = torch.where(inside, moved[c] + shift, moved[c])
            d[key] = moved
        return d


def contrast_augmentation(prob: float = 0.75) -> list:
    """Strong contrast randomisation for a share ``prob`` of training patches (see the module
    docstring); the rest keep the source's contrast, so the source site is still learnt as well."""
    strong = Compose([
        RandGINd(keys="image", prob=0.5),
        RandHistogramShiftd(keys="image", num_control_points=(5, 10), prob=0.3),
        RandAdjustContrastd(keys="image", gamma=(0.5, 2.0), prob=0.3),
        RandInvertIntensityd(keys="image", prob=0.3),
        RandLabelIntensityd(keys="image", prob=0.6),
    ])
    return [OneOf([strong, Identityd(keys="image")], weights=[prob, 1 - prob])]
