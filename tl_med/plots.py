"""Figures logged as run artifacts (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tl_med.train import EpochLog  # noqa: E402

__all__ = ["learning_curve", "overlays", "to_ras"]


def learning_curve(history: list[EpochLog], title: str) -> plt.Figure:
    """Training loss and validation Dice against epoch, on twin axes."""
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    epochs = [h.epoch for h in history]
    ax.plot(epochs, [h.train_loss for h in history], color="tab:blue", label="train loss (Dice+CE)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss", color="tab:blue")
    if any(h.val_dice is not None for h in history):
        ax2 = ax.twinx()
        ax2.plot(epochs, [h.val_dice for h in history], color="tab:orange", label="validation Dice")
        ax2.set_ylabel("validation Dice", color="tab:orange")
        ax2.set_ylim(0, 1)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _radiological(plane):
    """An axial RAS plane (x: left→right, y: posterior→anterior) as radiologists view it."""
    import numpy as np

    return np.fliplr(np.rot90(plane))


def to_ras(array, affine):
    """``array`` with its axes permuted and flipped to RAS (no resampling), as nibabel's
    ``as_closest_canonical`` does."""
    import nibabel as nib

    return nib.orientations.apply_orientation(array, nib.orientations.io_orientation(affine))


def overlays(rows, n_cases: int = 3) -> plt.Figure:
    """Sample overlays: for up to ``n_cases`` of ``rows`` (case id, image, label, predicted mask,
    affine; on the image's own grid), three axial slices through the liver with the image, the
    ground-truth contour (green) and the predicted contour (red)."""
    import numpy as np

    rows = [(case, *(to_ras(a, affine) for a in (image, label, pred))) for case, image, label, pred, affine in rows]
    fig, axes = plt.subplots(max(len(rows[:n_cases]), 1), 3, figsize=(7.5, 2.6 * max(len(rows[:n_cases]), 1)),
                             dpi=100, squeeze=False)
    for r, (case, image, label, pred) in enumerate(rows[:n_cases]):
        z = np.nonzero((label > 0).any(axis=(0, 1)))[0]
        lo, hi = (int(z.min()), int(z.max())) if z.size else (0, image.shape[2] - 1)
        for c, frac in enumerate((0.25, 0.5, 0.75)):
            k = int(round(lo + frac * (hi - lo)))
            ax = axes[r][c]
            ax.imshow(_radiological(image[:, :, k]), cmap="gray")
            if (label[:, :, k] > 0).any():
                ax.contour(_radiological(label[:, :, k] > 0), levels=[0.5], colors="lime", linewidths=1)
            if (pred[:, :, k] > 0).any():
                ax.contour(_radiological(pred[:, :, k] > 0), levels=[0.5], colors="red", linewidths=1)
            ax.set_title(f"{case} z={k}", fontsize=7)
            ax.axis("off")
    fig.suptitle("ground truth (green) vs prediction (red), on the acquired grid; radiological view: patient "
                 "right on the left, anterior up", fontsize=8)
    fig.tight_layout()
    return fig
