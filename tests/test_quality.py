"""Label-free quality signals: high for a model that finds the organ, lower for one that does not."""

from __future__ import annotations

import pytest
import torch

from tests.test_inference import AXIAL, Bright, _case, _spec
from tl_med.inference import Predictor
from tl_med.quality import estimate_quality, label_volumes_ml


class Lopsided(Bright):
    """Bright voxels, but only in the first half of the patch along one axis: position-dependent,
    so its predictions change when the image is flipped."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = torch.zeros_like(x)
        half[:, :, : x.shape[2] // 2] = 1
        fg = self.gain * (x * half - (1 - half))
        return torch.cat([-fg, fg], dim=1)


def test_a_model_that_agrees_with_itself_and_finds_the_usual_volume_scores_high(tmp_path):
    cases = [_case(tmp_path, AXIAL, name=f"c{i}")[0] for i in range(2)]
    volumes = label_volumes_ml(cases)
    assert volumes[0] == pytest.approx(4 / 3 * 3.14159 * 30 * 22 * 26 / 1000, rel=0.1) and volumes[1] >= 0
    unlabelled = [{k: v for k, v in c.items() if k != "label"} for c in cases]  # labels are never read
    good = estimate_quality(Predictor(Bright(), _spec(), torch.device("cpu")), unlabelled, (volumes[0], 5.0))
    bad = estimate_quality(Predictor(Lopsided(), _spec(), torch.device("cpu")), unlabelled, (volumes[0], 5.0))
    g, b = good.summary(), bad.summary()
    assert g["n_cases"] == 2 and g["agreement"] > 0.95 and abs(g["volume_z"]) < 3 and g["estimated_dice"] > 0.95
    assert b["agreement"] < g["agreement"] - 0.1 and b["volume_z"] < g["volume_z"]
    assert 0 <= g["entropy"] <= 1 and 0 <= b["entropy"] <= 1
    # agreeing with itself about a volume far from the source's is no evidence of quality
    off = estimate_quality(Predictor(Bright(), _spec(), torch.device("cpu")), unlabelled, (volumes[0] * 10, 5.0))
    assert off.summary()["agreement"] > 0.95 and off.summary()["estimated_dice"] == 0.0


class Nothing(Bright):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.ones_like(x), -torch.ones_like(x)], dim=1)


def test_a_model_that_finds_nothing_is_not_rated_by_its_self_agreement(tmp_path):
    item, _ = _case(tmp_path, AXIAL)
    summary = estimate_quality(Predictor(Nothing(), _spec(), torch.device("cpu")), [item], None).summary()
    assert summary["agreement"] == 0.0 and summary["estimated_dice"] == 0.0 and summary["volume_z"] != summary["volume_z"]
