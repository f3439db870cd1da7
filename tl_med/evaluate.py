"""Metrics with MONAI: Dice and HD95 per case and their means (the test split is scored on each
image's own grid by :func:`tl_med.inference.evaluate_native`; validation during training on the
preprocessed grid by :func:`dice_per_case`).

Example:
    >>> summary = CaseMetrics(case_ids=["a", "b"], dice=[0.8, 0.6], hd95=[3.0, 5.0]).summary()
    >>> round(summary["dice"], 2), round(summary["hd95"], 1)
    (0.7, 4.0)
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from monai.networks.utils import one_hot

__all__ = ["CaseMetrics", "case_scores", "dice_per_case", "Infer"]


@dataclass(frozen=True)
class CaseMetrics:
    case_ids: list[str]
    dice: list[float]
    hd95: list[float]

    def summary(self) -> dict[str, float]:
        """Mean Dice and mean HD95 over cases (HD95 over cases where it is finite)."""
        finite = [h for h in self.hd95 if math.isfinite(h)]
        return {"dice": sum(self.dice) / max(len(self.dice), 1),
                "hd95": sum(finite) / len(finite) if finite else float("nan"),
                "n_cases": float(len(self.dice))}

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["case_id", "dice", "hd95_mm"])
        for row in zip(self.case_ids, self.dice, self.hd95):
            writer.writerow([row[0], f"{row[1]:.4f}", f"{row[2]:.2f}"])
        return buf.getvalue()


Infer = Callable[[torch.Tensor, torch.nn.Module], torch.Tensor]


def _predict(model: torch.nn.Module, batch: dict, device: torch.device, n_classes: int,
             infer: Infer) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot prediction (argmax over classes) and one-hot ground truth of a batch."""
    image, label = batch["image"].to(device), batch["label"].to(device).long()
    return one_hot(infer(image, model).argmax(dim=1, keepdim=True), n_classes), one_hot(label, n_classes)


def _dice_metric() -> DiceMetric:
    """Foreground Dice per case; an empty-vs-empty case counts as 1."""
    return DiceMetric(include_background=False, reduction="none", ignore_empty=False)


@torch.no_grad()
def dice_per_case(model: torch.nn.Module, loader: Iterable[dict], device: torch.device,
                  n_classes: int = 2, *, infer: Infer) -> list[float]:
    """Foreground Dice of each case of ``loader`` (validation during training: whole preprocessed
    images through ``infer``, e.g. a sliding window)."""
    model.eval()
    dice = _dice_metric()
    scores: list[float] = []
    for batch in loader:
        scores.extend(dice(*_predict(model, batch, device, n_classes, infer)).mean(dim=1).cpu().tolist())
    return scores


def case_scores(pred: np.ndarray, label: np.ndarray, n_classes: int,
                spacing: tuple[float, ...]) -> tuple[float, float]:
    """Mean foreground Dice and HD95 (mm, with this voxel ``spacing``) of one case's label maps."""
    p = one_hot(torch.as_tensor(pred, dtype=torch.long)[None, None], n_classes)
    t = one_hot(torch.as_tensor(label, dtype=torch.long)[None, None], n_classes)
    dice = float(_dice_metric()(p, t).mean())
    hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    return dice, float(hd(p, t, spacing=list(spacing)).mean())
