"""The classifier catalogue: every name builds, and MedicalNet-format checkpoints load into the ResNets."""

import pytest
import torch

from tl_med.catalogue import CLASSIFIERS
from tl_med.config import ClassifierConfig
from tl_med.models.classifiers import BUILDERS, build_classifier
from tl_med.models.pretrained import load_state, transfer_weights


def test_every_catalogue_name_has_a_builder():
    assert set(BUILDERS) == set(CLASSIFIERS)


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_each_classifier_maps_a_multichannel_volume_to_class_logits(name):
    net = build_classifier(ClassifierConfig(network=name, width=4), in_channels=2, n_classes=3)
    assert tuple(net.eval()(torch.zeros(2, 2, 32, 32, 32)).shape) == (2, 3)


def test_width_64_is_the_published_network():
    net = build_classifier(ClassifierConfig(network="DenseNet121"), in_channels=1, n_classes=2)
    assert sum(p.numel() for p in net.parameters()) == 11_244_674  # MONAI's DenseNet121(spatial_dims=3)


def test_a_medicalnet_style_checkpoint_fills_everything_but_the_new_head(tmp_path):
    # MedicalNet saves {"state_dict": {"module.conv1.weight": ...}} from a DataParallel model
    trained = build_classifier(ClassifierConfig(network="ResNet18", width=8), in_channels=1, n_classes=5)
    path = tmp_path / "resnet_18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}}, path)
    fresh = build_classifier(ClassifierConfig(network="ResNet18", width=8), in_channels=1, n_classes=2)
    report = transfer_weights(fresh, load_state(str(path), tracker=None))
    assert set(report.shape_mismatched) == {"fc.weight", "fc.bias"}  # the new task's head
    assert torch.equal(fresh.state_dict()["layer4.1.conv2.weight"], trained.state_dict()["layer4.1.conv2.weight"])
    assert report.share > 0.99


def test_an_input_too_small_for_the_network_is_refused_by_the_config():
    with pytest.raises(ValueError, match="DenseNet121 needs at least 32 voxels per axis"):
        ClassifierConfig(network="DenseNet121", input_size=(16, 16, 16))
