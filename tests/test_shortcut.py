"""The shortcut check: predictions a scanner explains as well as the image are flagged."""

import numpy as np
import pytest

from tl_med.shortcut import scanner_groups, shortcut_check


def _probs(p1):
    p1 = np.asarray(p1, dtype=float)
    return np.stack([1 - p1, p1], axis=1)


def test_a_classifier_that_reads_the_scanner_is_flagged():
    # the class is far more common on scanner B, and the classifier's output is the scanner
    train = [("A",)] * 10 + [("B",)] * 10
    y_train = [0] * 9 + [1] + [1] * 9 + [0]
    test = [("A",)] * 6 + [("B",)] * 6
    y_test = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0]
    s = shortcut_check(train, y_train, test, y_test, _probs([0.2] * 6 + [0.8] * 6))
    assert s.flagged and s.explained == pytest.approx(1.0) and s.metadata_auc >= s.image_auc - 0.05
    assert "scanner" in s.reason and s.n_groups == 2


def test_a_classifier_that_reads_the_image_is_not_flagged():
    rng = np.random.default_rng(0)
    train = [("A",), ("B",)] * 10
    y_train = rng.integers(0, 2, 20).tolist()
    test = [("A",), ("B",)] * 8
    y_test = [0, 0, 1, 1] * 4
    p = np.where(np.asarray(y_test) == 1, 0.8, 0.2) + rng.normal(0, 0.05, 16)
    s = shortcut_check(train, y_train, test, y_test, _probs(p))
    assert not s.flagged and s.image_auc == pytest.approx(1.0) and s.explained < 0.2
    assert "less well than the image" in s.reason


def test_one_scanner_cannot_explain_anything_and_says_so():
    s = shortcut_check([("A",)] * 4, [0, 1, 0, 1], [("A",)] * 4, [0, 1, 0, 1], _probs([0.1, 0.9, 0.2, 0.8]))
    assert not s.flagged and s.metadata_auc is None and "one scanner" in s.reason and s.image_auc == 1.0


def test_scanner_groups_come_from_the_manifest_without_patient_facts(ingested):
    ws, _ = ingested
    groups = scanner_groups(ws.site_manifest("east"))
    assert groups and all(len(g) == 4 for g in groups.values())
    assert all(g[0] for g in groups.values())  # the manufacturer is known for DICOM inputs
