"""Case-level classifier data, training and prediction on tiny NIfTI volumes."""

import nibabel as nib
import numpy as np
import pytest
import torch

from tl_med.classifier import class_loader, fit_classifier, predict_probabilities, with_class
from tl_med.classify import class_metrics
from tl_med.config import ClassifierConfig, PipelineConfig
from tl_med.models.classifiers import build_classifier
from tl_med.train import seed_everything


def _cfg(**classifier):
    settings = {"network": "ResNet10", "width": 4, "input_size": (16, 16, 16), "batch_size": 4, "augment": "none",
                **classifier}
    return PipelineConfig.profile("tiny").model_copy(update={"classifier": ClassifierConfig(**settings)})


def _cases(folder, n, seed=0):
    """Class 1: a large bright block; class 0: a small one (the class is a physical size)."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        folder.mkdir(exist_ok=True)
        vol = rng.normal(0, 0.1, (20, 18, 14)).astype(np.float32)
        half = 5 if i % 2 else 2
        vol[10 - half:10 + half, 9 - half:9 + half, 7 - min(half, 6):7 + min(half, 6)] += 1.0
        path = folder / f"case{i}.nii.gz"
        nib.save(nib.Nifti1Image(vol, np.diag([8.0, 8.0, 8.0, 1.0])), path)
        items.append({"image": str(path), "case_id": f"case{i}", "content": f"{seed}:{i}", "class": i % 2})
    return items


def test_batches_are_the_input_size_and_cases_without_a_class_are_left_out(tmp_path):
    items = _cases(tmp_path, 5)
    assert len(with_class(items + [{"image": "x", "class": -1}, {"image": "y"}])) == 5
    loader = class_loader(items, _cfg(), tmp_path / "cache", train=True)
    batches = list(loader)
    assert [tuple(b["image"].shape) for b in batches] == [(4, 1, 16, 16, 16)]  # the 5th, alone, is dropped
    assert sorted(b for batch in batches for b in batch["class"].tolist()) in ([0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1])
    one = list(class_loader(items[:1], _cfg(), tmp_path / "cache", train=True))
    assert tuple(one[0]["image"].shape)[0] == 2  # one labelled case: two augmentations of it, never a batch of one
    test = list(class_loader(items, _cfg(), tmp_path / "cache", train=False))
    assert len(test) == 5 and [b["case_id"][0] for b in test] == [f"case{i}" for i in range(5)]


def test_training_learns_a_size_class_and_is_reproducible(tmp_path):
    cfg = _cfg(lr=3e-3)
    train, test = _cases(tmp_path, 12, seed=1), _cases(tmp_path / "test", 8, seed=2)

    def run():
        seed_everything(0)
        model = build_classifier(cfg.classifier, in_channels=1, n_classes=2)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.classifier.lr)
        history = fit_classifier(model, class_loader(train, cfg, tmp_path / "cache", train=True), opt, epochs=15,
                                 device=torch.device("cpu"))
        return history, predict_probabilities(model, class_loader(test, cfg, tmp_path / "cache", train=False))

    history, (ids, y, probs) = run()
    assert sum(e.train_loss for e in history[-5:]) / 5 < history[0].train_loss  # small batches: a noisy curve
    assert ids == [f"case{i}" for i in range(8)] and y.tolist() == [0, 1] * 4
    assert probs.shape == (8, 2) and np.allclose(probs.sum(axis=1), 1.0)
    assert class_metrics(y, probs).auc >= 0.9
    assert np.array_equal(run()[1][2], probs)  # same seed, same inputs: the same result on CPU


@pytest.mark.parametrize("size", [(24, 24, 24), (8, 8, 8)])
def test_images_are_cropped_or_padded_not_rescaled(tmp_path, size):
    items = _cases(tmp_path, 2)
    image = next(iter(class_loader(items, _cfg(input_size=size), tmp_path / "cache", train=False)))["image"]
    assert tuple(image.shape[2:]) == size
