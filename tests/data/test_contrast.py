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


def test_label_intensity_moves_the_organ_within_the_patch_range_and_keeps_its_texture():
    from tl_med.data.contrast import RandLabelIntensityd

    image = _image()
    label = torch.zeros_like(image)
    label[:, 10:14, 10:14, 10:14] = 1  # a bright corner of the ramp
    inside = label > 0
    levels = set()
    for seed in range(6):
        out = RandLabelIntensityd(keys="image", prob=1.0).set_random_state(seed)({"image": image, "label": label})
        moved = out["image"]
        assert torch.equal(moved[~inside], image[~inside])  # the rest is untouched
        texture = moved[inside] - image[inside]
        assert torch.allclose(texture, texture[0].expand_as(texture))  # one shift: the texture is kept
        assert 0.04 <= float(moved[inside].mean()) <= 0.96
        levels.add(round(float(moved[inside].mean()), 2))
    assert len(levels) >= 4 and min(levels) < float(image[inside].mean()) - 0.2  # darker and brighter levels
    unlabelled = RandLabelIntensityd(keys="image", prob=1.0)({"image": image})  # no label: unchanged
    assert torch.equal(unlabelled["image"], image)


def test_contrast_randomisation_moves_each_structure_of_each_channel_on_its_own():
    from tl_med.data.contrast import RandInvertIntensityd, RandLabelIntensityd, contrast_augmentation

    g = torch.Generator().manual_seed(0)
    image = torch.stack([torch.rand(16, 16, 16, generator=g), 100 + 50 * torch.rand(16, 16, 16, generator=g)])
    label = torch.zeros(1, 16, 16, 16)
    label[:, 2:6, 2:6, 2:6], label[:, 9:14, 9:14, 9:14] = 1, 2  # two structures (a three-class site)
    out = RandLabelIntensityd(keys="image", prob=1.0).set_random_state(0)({"image": image, "label": label})["image"]
    assert out.shape == image.shape and torch.equal(out[:, label[0] == 0], image[:, label[0] == 0])
    for c in range(2):
        shifts = [out[c][label[0] == v] - image[c][label[0] == v] for v in (1, 2)]
        assert all(torch.allclose(s, s[0].expand_as(s), atol=1e-4) for s in shifts)  # texture kept
        assert abs(float(shifts[0][0] - shifts[1][0])) > 1e-3  # each structure its own level
        lo, hi = torch.quantile(image[c].flatten(), torch.tensor([0.05, 0.95])).tolist()
        assert all(lo - 1e-4 <= float(out[c][label[0] == v].mean()) <= hi + 1e-4 for v in (1, 2))  # channel's range
    inverted = RandInvertIntensityd(keys="image", prob=1.0)({"image": image})["image"]
    assert torch.allclose(inverted[1].max(), image[1].max()) and torch.allclose(inverted[0].min(), image[0].min())
    chain = Compose(contrast_augmentation(prob=1.0)).set_random_state(2)
    assert all(chain({"image": image, "label": label})["image"].shape == image.shape for _ in range(20))
