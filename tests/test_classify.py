"""Classification metrics: AUC (and its bootstrap interval), balanced accuracy, calibration."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from tl_med.classify import class_metrics, expected_calibration_error


def test_metrics_agree_with_scikit_learn_and_the_interval_holds_the_point():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    p1 = np.clip(0.35 * y + rng.uniform(0, 0.65, 60), 0, 1)
    m = class_metrics(y, np.stack([1 - p1, p1], axis=1), n_boot=500)
    assert m.auc == pytest.approx(roc_auc_score(y, p1))
    assert m.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, p1 > 0.5))
    assert m.auc_low < m.auc < m.auc_high and m.auc_high - m.auc_low < 0.4 and m.n_cases == 60
    assert class_metrics(y, np.stack([1 - p1, p1], axis=1), n_boot=500) == m  # seeded: reproducible
    assert "AUC" in m.describe() and "95% CI" in m.describe()


def test_three_classes_use_macro_one_vs_rest_auc():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 90)
    logits = np.eye(3)[y] * 1.5 + rng.normal(size=(90, 3))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    m = class_metrics(y, probs, n_boot=100)
    assert m.auc == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))


def test_cases_without_a_class_are_left_out_and_one_class_has_no_auc():
    m = class_metrics([-1, 0, 0, -1], [[0.5, 0.5], [0.8, 0.2], [0.7, 0.3], [0.1, 0.9]])
    assert m.n_cases == 2 and m.auc is None and m.balanced_accuracy == 1.0 and "n/a" in m.describe()
    assert class_metrics([-1], [[0.5, 0.5]]).n_cases == 0


def test_calibration_error_is_zero_when_confidence_matches_accuracy():
    y = np.array([0, 0, 0, 1])  # 75 % right at 0.75 confidence
    probs = np.tile([0.75, 0.25], (4, 1))
    assert expected_calibration_error(y, probs) == pytest.approx(0.0)
    assert expected_calibration_error(np.array([1, 1]), np.tile([0.9, 0.1], (2, 1))) == pytest.approx(0.9)
