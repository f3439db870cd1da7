"""Figures logged as run artifacts (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tl_med.train import EpochLog  # noqa: E402

__all__ = ["learning_curve", "overlays"]


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


def overlays(model, loader, device, n_cases: int = 3) -> plt.Figure:
    """Sample overlays: for ``n_cases`` test cases, three axial slices through the liver with the
    image, the ground-truth contour (green) and the predicted contour (red)."""
    import numpy as np
    import torch

    model.eval().to(device)
    rows = []
    with torch.no_grad():
        for batch in loader:
            pred = model(batch["image"].to(device)).argmax(dim=1).cpu().numpy()
            for i in range(pred.shape[0]):
                rows.append((batch["case_id"][i], batch["image"][i, 0].numpy(), batch["label"][i, 0].numpy(), pred[i]))
            if len(rows) >= n_cases:
                break
    fig, axes = plt.subplots(max(len(rows), 1), 3, figsize=(7.5, 2.6 * max(len(rows), 1)), dpi=100, squeeze=False)
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
    fig.suptitle("ground truth (green) vs prediction (red); radiological view: patient right on the left, "
                 "anterior up", fontsize=8)
    fig.tight_layout()
    return fig
