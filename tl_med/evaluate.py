"""Metrics with MONAI: Dice and HD95 per case, per foreground class and their means (the test
split is scored on each image's own grid by :func:`tl_med.inference.evaluate_native`; validation
during training on the preprocessed grid by :func:`dice_per_case`).

A case's Dice is the mean over the task's foreground classes; each class's own Dice and HD95 are
kept beside it (``dice_<class>``, ``hd95_<class>`` in the summary when there are several).

Example:
    >>> summary = CaseMetrics(case_ids=["a", "b"], dice=[0.8, 0.6], hd95=[3.0, 5.0]).summary()
    >>> round(summary["dice"], 2), round(summary["hd95"], 1)
    (0.7, 4.0)
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from monai.networks.utils import one_hot

__all__ = ["CaseMetrics", "case_scores", "dice_per_case", "metric_name", "Infer"]


def metric_name(label: str) -> str:
    """A class name as part of a metric key: lower case, runs of other characters as ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_") or "class"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _finite_mean(values: list[float]) -> float:
    return _mean([v for v in values if math.isfinite(v)])


@dataclass(frozen=True)
class CaseMetrics:
    """Per-case scores; ``classes`` names the foreground classes and ``class_dice``/``class_hd95``
    hold one row per case, one column per class (empty: a binary task's one class is ``dice``)."""

    case_ids: list[str]
    dice: list[float]
    hd95: list[float]
    classes: list[str] = field(default_factory=list)
    class_dice: list[list[float]] = field(default_factory=list)
    class_hd95: list[list[float]] = field(default_factory=list)
    case_classes: list[dict[str, float]] = field(default_factory=list)  # a multi-task model's class probabilities

    def per_class(self) -> dict[str, dict[str, float]]:
        """Mean Dice and HD95 of each foreground class over the cases (none for a binary task)."""
        if len(self.classes) < 2:
            return {}
        return {name: {"dice": _mean([row[i] for row in self.class_dice]),
                       "hd95": _finite_mean([row[i] for row in self.class_hd95])}
                for i, name in enumerate(self.classes)}

    def summary(self) -> dict[str, float]:
        """Mean Dice and mean HD95 over cases (HD95 over cases where it is finite), and with
        several foreground classes ``dice_<class>``/``hd95_<class>``."""
        out = {"dice": sum(self.dice) / max(len(self.dice), 1), "hd95": _finite_mean(self.hd95),
               "n_cases": float(len(self.dice))}
        for name, m in self.per_class().items():
            out[f"dice_{metric_name(name)}"], out[f"hd95_{metric_name(name)}"] = m["dice"], m["hd95"]
        return out

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf)
        several = len(self.classes) > 1
        names = [metric_name(c) for c in self.classes]
        writer.writerow(["case_id", "dice", "hd95_mm",
                         *([c for name in names for c in (f"dice_{name}", f"hd95_{name}_mm")] if several else [])])
        for i, row in enumerate(zip(self.case_ids, self.dice, self.hd95)):
            extra = [f for d, h in zip(self.class_dice[i], self.class_hd95[i]) for f in (f"{d:.4f}", f"{h:.2f}")] \
                if several else []
            writer.writerow([row[0], f"{row[1]:.4f}", f"{row[2]:.2f}", *extra])
        return buf.getvalue()


Infer = Callable[[torch.Tensor, torch.nn.Module], torch.Tensor]


def _predict(model: torch.nn.Module, batch: dict, device: torch.device,
             infer: Infer) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot prediction (argmax over the network's classes) and one-hot ground truth of a batch."""
    image, label = batch["image"].to(device), batch["label"].to(device).long()
    logits = infer(image, model)
    n_classes = logits.shape[1]
    return one_hot(logits.argmax(dim=1, keepdim=True), n_classes), one_hot(label, n_classes)


def _dice_metric() -> DiceMetric:
    """Foreground Dice per case; an empty-vs-empty case counts as 1."""
    return DiceMetric(include_background=False, reduction="none", ignore_empty=False)


@torch.no_grad()
def dice_per_case(model: torch.nn.Module, loader: Iterable[dict], device: torch.device,
                  *, infer: Infer) -> list[float]:
    """Mean foreground Dice of each case of ``loader`` (validation during training: whole
    preprocessed images through ``infer``, e.g. a sliding window)."""
    model.eval()
    dice = _dice_metric()
    scores: list[float] = []
    for batch in loader:
        scores.extend(dice(*_predict(model, batch, device, infer)).mean(dim=1).cpu().tolist())
    return scores


def case_scores(pred: np.ndarray, label: np.ndarray, n_classes: int,
                spacing: tuple[float, ...]) -> tuple[list[float], list[float]]:
    """Dice and HD95 (mm, with this voxel ``spacing``) of each foreground class of one case's
    label maps (a class absent from both counts Dice 1, HD95 nan)."""
    p = one_hot(torch.as_tensor(pred, dtype=torch.long)[None, None], n_classes)
    t = one_hot(torch.as_tensor(label, dtype=torch.long)[None, None], n_classes)
    dice = _dice_metric()(p, t)[0]
    hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(p, t, spacing=list(spacing))[0]
    return [float(v) for v in dice], [float(v) for v in hd]
