"""Intensity harmonisation: histogram standardisation of target images to the source site.

Nyúl & Udupa's method (as in TorchIO's ``HistogramStandardization``): fit the mean intensity
landmarks (percentiles inside the body) on source images; map each target image's own landmarks
onto them piecewise-linearly. It runs on the raw image, before the usual normalisation, so a
scanner's intensity curve (a rescale slope, a contrast protocol, an MR bias in level) is undone.

Example:
    >>> import numpy as np
    >>> marks = fit_landmarks([np.linspace(0, 100, 1000)])
    >>> float(np.round(standardise(np.linspace(0, 50, 1000), marks)[-1]))
    100.0
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping

import numpy as np
import torch
from monai.transforms import MapTransform

__all__ = ["PERCENTILES", "fit_landmarks", "standardise", "HarmoniseToSourced"]

PERCENTILES = (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0)


def _landmarks(image: np.ndarray) -> np.ndarray:
    values = np.asarray(image, dtype=np.float64).ravel()
    body = values[values > np.percentile(values, 5)]  # leave out the air/background mode
    return np.percentile(body if body.size else values, PERCENTILES)


def fit_landmarks(images: Iterable[np.ndarray]) -> tuple[float, ...]:
    """The mean landmarks of the source images."""
    marks = [_landmarks(im) for im in images]
    if not marks:
        raise ValueError("no source images to fit intensity landmarks on")
    return tuple(float(v) for v in np.mean(marks, axis=0))


def standardise(image: np.ndarray, landmarks: tuple[float, ...]) -> np.ndarray:
    """Map ``image``'s landmarks onto ``landmarks`` (linear between them, extrapolated outside)."""
    own = _landmarks(image)
    own = np.maximum.accumulate(own + np.arange(len(own)) * 1e-6)  # strictly increasing
    ref = np.asarray(landmarks)
    flat = np.asarray(image, dtype=np.float64)
    out = np.interp(flat, own, ref)
    lo, hi = flat < own[0], flat > own[-1]
    out[lo] = ref[0] + (flat[lo] - own[0]) * (ref[1] - ref[0]) / (own[1] - own[0])
    out[hi] = ref[-1] + (flat[hi] - own[-1]) * (ref[-1] - ref[-2]) / (own[-1] - own[-2])
    return out.astype(np.float32)


class HarmoniseToSourced(MapTransform):
    """MONAI dictionary transform applying :func:`standardise` with fixed source landmarks."""

    def __init__(self, keys: str, landmarks: tuple[float, ...]) -> None:
        super().__init__(keys)
        self.landmarks = tuple(landmarks)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if isinstance(image, torch.Tensor):  # MetaTensor: keep its affine and metadata
                out = image.float().clone()
                out[...] = torch.as_tensor(standardise(image.detach().cpu().numpy(), self.landmarks))
                d[key] = out
            else:
                d[key] = standardise(np.asarray(image), self.landmarks)
        return d
