"""Figures logged as run artifacts (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tl_med.train import EpochLog  # noqa: E402

__all__ = ["learning_curve"]


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
