"""Test-split evaluation with MONAI metrics: Dice and HD95 per case and their means.

Example:
    >>> summary = CaseMetrics(case_ids=["a", "b"], dice=[0.8, 0.6], hd95=[3.0, 5.0]).summary()
    >>> round(summary["dice"], 2), round(summary["hd95"], 1)
    (0.7, 4.0)
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from monai.networks.utils import one_hot

__all__ = ["CaseMetrics", "evaluate_cases", "dice_per_case"]


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


def _predict(model: torch.nn.Module, batch: dict, device: torch.device,
             n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot prediction (argmax over classes) and one-hot ground truth of a batch."""
    image, label = batch["image"].to(device), batch["label"].to(device).long()
    return one_hot(model(image).argmax(dim=1, keepdim=True), n_classes), one_hot(label, n_classes)


def _dice_metric() -> DiceMetric:
    """Foreground Dice per case; an empty-vs-empty case counts as 1."""
    return DiceMetric(include_background=False, reduction="none", ignore_empty=False)


@torch.no_grad()
def dice_per_case(model: torch.nn.Module, loader: Iterable[dict], device: torch.device,
                  n_classes: int = 2) -> list[float]:
    """Foreground Dice of each case of ``loader`` (validation during training)."""
    model.eval()
    dice = _dice_metric()
    scores: list[float] = []
    for batch in loader:
        scores.extend(dice(*_predict(model, batch, device, n_classes)).mean(dim=1).cpu().tolist())
    return scores


@torch.no_grad()
def evaluate_cases(model: torch.nn.Module, loader: Iterable[dict], device: torch.device,
                   spacing: tuple[float, float, float], n_classes: int = 2) -> CaseMetrics:
    """Per-case foreground Dice and HD95 (mm, on the preprocessed grid) of ``model`` on ``loader``."""
    model.eval().to(device)
    dice = _dice_metric()
    hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    ids: list[str] = []
    d_all: list[float] = []
    h_all: list[float] = []
    for batch in loader:
        pred, truth = _predict(model, batch, device, n_classes)
        d_all.extend(dice(pred, truth).mean(dim=1).cpu().tolist())
        h_all.extend(hd(pred, truth, spacing=list(spacing)).mean(dim=1).cpu().tolist())
        ids.extend(batch["case_id"])
    return CaseMetrics(case_ids=ids, dice=d_all, hd95=h_all)
