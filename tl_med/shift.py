"""How a target site differs from the source, for the reviewer who decides on its model.

:func:`shift_summary` compares the two sites' manifests (modality, scanner, spacing, orientation)
and their intensities, both as acquired (physical units: HU or MR signal) and as the network sees
them (after the model's intensity normalisation), and measures the normalised shift as a 1-D
Wasserstein distance. :func:`shift_figure` draws it; ``adapt_site`` logs both with the site's
parent run (``shift/summary.json``, ``shift/summary.png``, metric ``shift_intensity_w1``).

Only numbers derived from de-identified NIfTI files and manifest facts appear: no identifier.

Example:
    >>> # summary, samples = shift_summary(source_manifest, target_manifest, cfg.preprocess, ws.cache)
    >>> # summary["intensity_w1"], summary["target"]["spacing_mm"]
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import wasserstein_distance  # noqa: E402

from tl_med.config import PreprocessConfig  # noqa: E402
from tl_med.data.transforms import cached_dataset  # noqa: E402
from tl_med.manifests import datalist, load_manifest  # noqa: E402

__all__ = ["shift_summary", "shift_figure"]

_SAMPLES = 20_000  # voxels drawn per image


def _cases(manifest_path: Path) -> list:
    m = load_manifest(manifest_path)
    return [*m.training, *m.validation, *m.test, *m.unlabelled]


def _facts(manifest_path: Path) -> dict[str, Any]:
    """What the manifest says about a site's acquisitions: counts of each value, median spacing."""
    cases = _cases(manifest_path)
    spacing = np.median(np.asarray([c.spacing[:3] for c in cases], dtype=float), axis=0) if cases else []
    return {"cases": len(cases),
            "modality": dict(Counter(c.modality for c in cases)),
            "scanner": dict(Counter(f"{c.manufacturer} {c.model}".strip() or "unknown" for c in cases)),
            "orientation": dict(Counter(c.orientation for c in cases)),
            "spacing_mm": [round(float(v), 2) for v in spacing]}


def _sample(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flat = values.reshape(-1)
    return flat[rng.integers(0, flat.size, size=min(_SAMPLES, flat.size))].astype(np.float32)


def _body(values: np.ndarray) -> np.ndarray:
    """Voxels above Otsu's threshold: the body without the air around it."""
    hist, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centres) - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    threshold = centres[np.argmax(w0 * w1 * (m0 - m1) ** 2)]
    return values[values > threshold]


def _intensities(items: list[dict], preprocess: PreprocessConfig, cache: Path,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Voxel samples of the body (above Otsu's threshold) as acquired and as the network sees them."""
    raw, seen = [], []
    for item, data in zip(items, cached_dataset([{k: v for k, v in it.items() if k != "label"} for it in items],
                                                preprocess, cache)):
        acquired = np.asanyarray(nib.load(item["image"]).dataobj, dtype=np.float32)
        raw.append(_sample(_body(acquired), rng))
        seen.append(_sample(_body(np.asarray(data["image"], dtype=np.float32)), rng))
    return np.concatenate(raw), np.concatenate(seen)


Samples = dict[str, tuple[np.ndarray, np.ndarray]]


def shift_summary(source_manifest: Path, target_manifest: Path, preprocess: PreprocessConfig, cache: Path,
                  max_images: int = 8, seed: int = 0) -> tuple[dict[str, Any], Samples]:
    """Acquisition facts of both sites and their intensity distributions (up to ``max_images``
    training or unlabelled images each, never the test split), with the Wasserstein distance
    between the normalised ones (in the normalised units: z-score or [0, 1]); and the voxel
    samples (as acquired, as seen) by role, for :func:`shift_figure`."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"intensity": preprocess.intensity}
    samples: Samples = {}
    for role, path in (("source", source_manifest), ("target", target_manifest)):
        items = (datalist(path, "training") + datalist(path, "unlabelled"))[:max_images]
        out[role] = {"site": load_manifest(path).name, **_facts(path), "images_sampled": len(items)}
        if items:
            samples[role] = _intensities(items, preprocess, cache, rng)
            raw, seen = samples[role]
            out[role]["acquired_percentiles"] = {p: round(float(np.percentile(raw, p)), 1) for p in (5, 50, 95)}
            out[role]["normalised_percentiles"] = {p: round(float(np.percentile(seen, p)), 3) for p in (5, 50, 95)}
    out["intensity_w1"] = (float(wasserstein_distance(samples["source"][1], samples["target"][1]))
                           if len(samples) == 2 else None)
    return out, samples


def _cell(value: Any) -> str:
    text = ", ".join(f"{k} ×{v}" for k, v in value.items()) if isinstance(value, dict) else str(value)
    return text if len(text) <= 28 else text[:27] + "…"


def shift_figure(summary: dict[str, Any], samples: Samples) -> plt.Figure:
    """Intensity histograms of both sites, as acquired and as the network sees them, and a table
    of the acquisition facts."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=100, gridspec_kw={"width_ratios": [1, 1, 1.1]})
    colours = {"source": "tab:blue", "target": "tab:orange"}
    for role, (raw, seen) in samples.items():
        name = f"{role} {summary[role]['site']}"
        axes[0].hist(raw, bins=80, density=True, alpha=0.5, color=colours[role], label=name)
        axes[1].hist(seen, bins=80, density=True, alpha=0.5, color=colours[role], label=name)
    axes[0].set_title("as acquired (HU or MR signal)")
    w1 = summary["intensity_w1"]
    axes[1].set_title(f"as the network sees them ({summary['intensity']})"
                      + (f"\nWasserstein distance {w1:.3f}" if w1 is not None else ""))
    for ax in axes[:2]:
        ax.legend(fontsize=7)
        ax.set_yticks([])
    rows = [(key, _cell(summary["source"][key]), _cell(summary["target"][key]))
            for key in ("modality", "scanner", "orientation", "spacing_mm", "cases")]
    axes[2].axis("off")
    table = axes[2].table(cellText=rows, colLabels=["", summary["source"]["site"], summary["target"]["site"]],
                          loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.scale(1, 1.4)
    fig.suptitle(f"Domain shift: {summary['source']['site']} → {summary['target']['site']}")
    fig.tight_layout()
    return fig
