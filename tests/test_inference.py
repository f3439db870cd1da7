"""Whole-image inference lands on the image's own grid, whatever its orientation and spacing."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from tl_med.config import InferenceConfig, NetworkConfig, PreprocessConfig
from tl_med.inference import Predictor, evaluate_native, voxel_spacing
from tl_med.models.spec import ModelSpec, load_package, save_package


class Bright(torch.nn.Module):
    """Foreground wherever the normalised image is above its mean: a known-answer 'network'."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-self.gain * x, self.gain * x], dim=1)


def _spec(**pre) -> ModelSpec:
    return ModelSpec(task="liver", site="t", modality="CT", labels={"0": "background", "1": "liver"},
                     network=NetworkConfig(channels=(4, 8), strides=(2,)),
                     preprocess=PreprocessConfig(spacing=(4.0, 4.0, 4.0), patch_size=(16, 16, 16), **pre),
                     inference=InferenceConfig(overlap=0.25, sw_batch_size=2))


def _case(tmp_path, affine: np.ndarray, shape=(40, 36, 30), name="case"):
    """A bright ellipsoid (label 1) in a dark volume, on the grid ``affine``."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    xyz = (np.c_[ijk, np.ones(len(ijk))] @ affine.T)[:, :3]
    centre = affine[:3, :3] @ (np.array(shape) / 2) + affine[:3, 3]
    inside = (((xyz - centre) / np.array([30.0, 22.0, 26.0])) ** 2).sum(1) < 1
    label = inside.reshape(shape).astype(np.uint8)
    image = np.where(label, 900.0, 50.0) + np.random.default_rng(0).normal(0, 5, shape)
    paths = tmp_path / f"{name}.nii.gz", tmp_path / f"{name}_label.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine), paths[0])
    nib.save(nib.Nifti1Image(label, affine), paths[1])
    return {"image": str(paths[0]), "label": str(paths[1]), "case_id": name}, label


# an axial LPS-stored grid (x and y flipped) with thick slices, and a sagittal grid (axes permuted)
AXIAL = np.array([[-1.5, 0, 0, 60], [0, -1.5, 0, 50], [0, 0, 5.0, -70], [0, 0, 0, 1]])
SAGITTAL = np.array([[0, 0, -4.0, 60], [2.0, 0, 0, -40], [0, -2.0, 0, 35], [0, 0, 0, 1]])


@pytest.mark.parametrize("affine", [AXIAL, SAGITTAL], ids=["axial-LPS-thick", "sagittal"])
def test_masks_come_back_on_the_inputs_own_grid(tmp_path, affine):
    item, label = _case(tmp_path, affine)
    pred = Predictor(Bright(), _spec(), torch.device("cpu")).predict(item["image"])
    assert pred.mask.shape == label.shape and pred.mask.dtype == np.uint8
    np.testing.assert_allclose(pred.affine, affine, atol=1e-4)
    inter = np.logical_and(pred.mask == 1, label == 1).sum()
    assert 2 * inter / (pred.mask.sum() + label.sum()) > 0.93  # resampled to 4 mm and back


def test_an_in_memory_volume_gives_the_same_mask_as_its_file(tmp_path):
    item, _ = _case(tmp_path, SAGITTAL)
    img = nib.load(item["image"])
    predictor = Predictor(Bright(), _spec(), torch.device("cpu"))
    from_file = predictor.predict(item["image"]).mask
    from_array = predictor.predict((np.asanyarray(img.dataobj), img.affine)).mask
    assert np.array_equal(from_file, from_array)


def test_native_metrics_use_the_labels_grid_and_spacing(tmp_path):
    item, _ = _case(tmp_path, AXIAL)
    metrics, shown = evaluate_native(Predictor(Bright(), _spec(), torch.device("cpu")), [item], "eval")
    assert metrics.case_ids == ["case"] and metrics.dice[0] > 0.93 and 0 < metrics.hd95[0] <= 5.0 + 1e-6
    assert voxel_spacing(AXIAL) == (1.5, 1.5, 5.0) and len(shown) == 1 and shown[0][3].shape == (40, 36, 30)


def test_a_package_round_trips_with_its_spec(tmp_path):
    from tl_med.models.zoo import build_network

    spec = _spec()
    torch.manual_seed(0)
    net = build_network(spec.network)
    folder = save_package(tmp_path / "pkg", net, spec)
    again, spec2 = load_package(folder)
    assert spec2 == spec and all(torch.equal(v, again.state_dict()[k]) for k, v in net.state_dict().items())


def test_channel_argmax_equals_torchs_on_permuted_volumes_with_ties():
    from tl_med.inference import channel_argmax

    probs = torch.rand(3, 12, 10, 8, generator=torch.Generator().manual_seed(0)).permute(0, 3, 1, 2)
    probs[:, :2] = 0.25  # ties: the first channel wins, as with torch.argmax
    assert np.array_equal(channel_argmax(probs), torch.argmax(probs, dim=0).numpy().astype(np.uint8))
