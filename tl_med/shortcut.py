"""Shortcut check: is a classifier's output explained by the scanner as well as by the image?

A classifier can score well by recognising *where* an image came from (manufacturer, model,
reconstruction kernel, field strength: facts the manifest keeps) when the class is more common on
one scanner than another. Two questions, on the test cases:

* **Metadata AUC**: how well does the scanner alone predict the true class? The predictor is each
  scanner group's class frequency in the training cases (Laplace-smoothed; the training prior for a
  scanner not seen in training), so nothing is fitted on the test split.
* **Explained share**: how much of the variance of the classifier's own probabilities lies between
  scanner groups (η², the correlation ratio)? 1 means its output is a function of the scanner.

The classifier is flagged when the scanner varies among the test cases and either the metadata AUC
comes within ``margin`` of the classifier's own AUC (while itself above chance by ``margin``) or
the scanner explains at least ``explained_limit`` of the output's variance. One scanner for every
test case explains nothing, and the check says so rather than passing silently.

Example:
    >>> groups = [("A",), ("A",), ("B",), ("B",)]
    >>> s = shortcut_check(groups, [0, 0, 1, 1], groups, [0, 0, 1, 1], [[.9, .1], [.8, .2], [.2, .8], [.1, .9]])
    >>> s.flagged, round(s.metadata_auc, 2)
    (True, 1.0)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tl_med.classify import auc
from tl_med.manifests import load_manifest

__all__ = ["Shortcut", "shortcut_check", "scanner_groups", "SCANNER_FACTS"]

# the manifest's acquisition facts that identify a scanner and protocol (not the patient)
SCANNER_FACTS = ("ConvolutionKernel", "MagneticFieldStrength")


@dataclass(frozen=True)
class Shortcut:
    flagged: bool
    reason: str
    metadata_auc: float | None  # the scanner alone predicting the true class
    image_auc: float | None  # the classifier itself
    explained: float | None  # share of the classifier's output variance between scanner groups
    n_groups: int  # scanner groups among the test cases

    def summary(self) -> dict[str, object]:
        return asdict(self)


def scanner_groups(manifest_path: Path) -> dict[str, tuple[str, ...]]:
    """Case id → (manufacturer, model, kernel, field strength) from a site's manifest."""
    m = load_manifest(manifest_path)
    return {c.case_id: (c.manufacturer, c.model, *(c.acquisition.get(k, "") for k in SCANNER_FACTS))
            for c in (*m.training, *m.validation, *m.test, *m.unlabelled)}


def _metadata_probs(train_groups: Sequence[tuple], y_train: np.ndarray, test_groups: Sequence[tuple],
                    n_classes: int) -> np.ndarray:
    prior = (np.bincount(y_train, minlength=n_classes) + 1.0) / (len(y_train) + n_classes)
    counts: dict[tuple, np.ndarray] = defaultdict(lambda: np.zeros(n_classes))
    for g, y in zip(train_groups, y_train):
        counts[g][y] += 1
    rows = []
    for g in test_groups:
        c = counts.get(g)
        rows.append(prior if c is None else (c + prior) / (c.sum() + 1.0))
    return np.asarray(rows)


def _explained(groups: Sequence[tuple], scores: np.ndarray) -> float | None:
    total = float(((scores - scores.mean()) ** 2).sum())
    if total <= 1e-12:
        return None
    between = 0.0
    for g in set(groups):
        part = scores[[i for i, h in enumerate(groups) if h == g]]
        between += len(part) * float((part.mean() - scores.mean()) ** 2)
    return between / total


def shortcut_check(train_groups: Sequence[tuple], y_train: Sequence[int], test_groups: Sequence[tuple],
                   y_test: Sequence[int], probs: Sequence[Sequence[float]], *, margin: float = 0.05,
                   explained_limit: float = 0.8) -> Shortcut:
    """Check a classifier's test probabilities ``probs`` against the scanner groups of its
    training and test cases (see the module docstring)."""
    y_tr, y_te = np.asarray(y_train, dtype=int), np.asarray(y_test, dtype=int)
    p = np.asarray(probs, dtype=float).reshape(len(y_te), -1)
    n_groups = len(Counter(test_groups))
    image_auc = auc(y_te, p) if len(y_te) else None
    if n_groups < 2:
        return Shortcut(False, "one scanner for every test case: the metadata cannot explain the output here",
                        None, image_auc, None, n_groups)
    meta_auc = auc(y_te, _metadata_probs(train_groups, y_tr, test_groups, p.shape[1]))
    score = 1.0 - p[:, 0]  # the probability of any class but the first (the positive class of two)
    explained = _explained(list(test_groups), score)
    reasons = []
    if meta_auc is not None and meta_auc > 0.5 + margin and (image_auc is None or meta_auc >= image_auc - margin):
        reasons.append(f"the scanner alone predicts the class with AUC {meta_auc:.2f}"
                       + (f" (the classifier: {image_auc:.2f})" if image_auc is not None else ""))
    if explained is not None and explained >= explained_limit:
        reasons.append(f"the scanner explains {explained:.0%} of the classifier's output variance")
    reason = "; ".join(reasons) or "the scanner explains the output less well than the image"
    return Shortcut(bool(reasons), reason, meta_auc, image_auc, explained, n_groups)
