"""Contrast augmentation: what each transform does to an image, reproducibly."""

from __future__ import annotations

import torch
from monai.transforms import Compose

from tl_med.config import PipelineConfig
from tl_med.data.contrast import RandGINd, RandInvertIntensityd
from tl_med.data.transforms import augmentation


def _image() -> torch.Tensor:
    return torch.linspace(0, 1, 16 ** 3).reshape(1, 16, 16, 16)


def test_inversion_mirrors_the_image_within_its_range():
    out = RandInvertIntensityd(keys="image", prob=1.0)({"image": _image()})["image"]
    assert torch.allclose(out, 1 - _image()) and float(out.min()) == 0 and float(out.max()) == 1


def test_gin_gives_a_new_contrast_with_the_inputs_statistics_and_repeats_with_its_seed():
    image = _image()
    first = RandGINd(keys="image", prob=1.0).set_random_state(3)({"image": image})["image"]
    again = RandGINd(keys="image", prob=1.0).set_random_state(3)({"image": image})["image"]
    other = RandGINd(keys="image", prob=1.0).set_random_state(4)({"image": image})["image"]
    assert first.shape == image.shape and torch.equal(first, again) and not torch.equal(first, other)
    assert abs(float(first.mean() - image.mean())) < 1e-4 and abs(float(first.std() - image.std())) < 1e-4
    assert not torch.allclose(first, image, atol=1e-2)  # a different contrast, not the input


def test_augment_kinds_and_older_boolean_configs():
    assert augmentation("none") == [] and len(augmentation("contrast")) == len(augmentation("intensity")) + 1
    out = Compose(augmentation("contrast")).set_random_state(0)({"image": _image(), "label": torch.zeros(1, 16, 16, 16)})
    assert out["image"].shape == (1, 16, 16, 16) and torch.isfinite(out["image"]).all()
    base = PipelineConfig.profile("tiny").model_dump()
    assert PipelineConfig.model_validate({**base, "pretrain": {**base["pretrain"], "augment": True}}).pretrain.augment \
        == "intensity"
    assert PipelineConfig.model_validate({**base, "adapt": {**base["adapt"], "augment": False}}).adapt.augment == "none"


def test_contrast_randomisation_leaves_a_share_of_patches_in_the_source_contrast():
    from tl_med.data.contrast import contrast_augmentation

    chain = Compose(contrast_augmentation(prob=0.5)).set_random_state(1)
    changed = sum(not torch.equal(chain({"image": _image()})["image"], _image()) for _ in range(200))
    # half go through the strong chain, of which about 17 % come out unchanged (no sub-transform fired)
    assert 70 < changed < 130
