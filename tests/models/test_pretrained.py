"""Pretrained sources load through the same code users use: a MONAI bundle (folder or zip), a
checkpoint file, an MLflow run; each with a report of what was transferred."""

import json
import shutil
import zipfile

import pytest
import torch

from tl_med.config import NetworkConfig
from tl_med.errors import InputError
from tl_med.models.pretrained import load_state, transfer_weights
from tl_med.models.zoo import build_network

NET = NetworkConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=0)


def make_bundle(folder, net: torch.nn.Module, with_config: bool = True):
    """A MONAI-model-zoo-shaped bundle: configs/metadata.json, configs/inference.json, models/model.pt."""
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "metadata.json").write_text(json.dumps({
        "version": "0.1.0", "monai_version": "1.6.1", "pytorch_version": "2.13.0",
        "network_data_format": {"inputs": {"image": {"num_channels": 1}},
                                "outputs": {"pred": {"num_channels": 2}}}}))
    if with_config:
        (folder / "configs" / "inference.json").write_text(json.dumps({"network_def": {
            "_target_": "monai.networks.nets.UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
            "channels": list(NET.channels), "strides": list(NET.strides), "num_res_units": 0}}))
    torch.save(net.state_dict(), folder / "models" / "model.pt")
    return folder


@pytest.mark.parametrize("with_config", [True, False])
def test_bundle_folder_and_zip_load_through_monai_bundle(tmp_path, with_config):
    torch.manual_seed(3)
    source = build_network(NET)
    bundle = make_bundle(tmp_path / "liver_seg_bundle", source, with_config)
    zipped = shutil.make_archive(str(tmp_path / "liver_seg_bundle"), "zip", tmp_path, "liver_seg_bundle")
    for where in (str(bundle), zipped):
        state = load_state(where, tracker=None)
        target = build_network(NET)
        report = transfer_weights(target, state)
        assert not report.newly_initialised and len(report.transferred) == len(source.state_dict())
        assert all(torch.equal(v, target.state_dict()[k]) for k, v in source.state_dict().items())


def test_not_a_bundle_is_a_clear_error(tmp_path):
    (tmp_path / "empty_bundle" / "configs").mkdir(parents=True)
    with pytest.raises(InputError, match="not a MONAI bundle \\(no configs/metadata.json\\)"):
        load_state(str(tmp_path / "empty_bundle"), tracker=None)
    with pytest.raises(InputError, match="no such bundle"):
        load_state(str(tmp_path / "missing.zip"), tracker=None)
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(InputError, match="unsafe paths"):
        load_state(str(evil), tracker=None)


def test_checkpoint_with_module_prefix_and_a_new_head(tmp_path):
    """A DataParallel/MedicalNet-style checkpoint; the target network has 3 classes, not 2."""
    source = build_network(NET)
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 7, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    target = build_network(NET.model_copy(update={"out_channels": 3}))
    report = transfer_weights(target, load_state(str(path), tracker=None))
    assert set(report.newly_initialised) == {"model.2.conv.weight", "model.2.conv.bias"}  # the new head
    assert "model.0.conv.weight" in report.transferred
    assert set(report.shape_mismatched) == {"model.2.conv.weight", "model.2.conv.bias"} and not report.missing
    assert report.shape_mismatched["model.2.conv.bias"] == ((2,), (3,)) and 0.9 < report.share < 1
    report.require(0.5, "ckpt.pth")  # a new head is fine
    assert "2 shape-mismatched (model.2.conv.bias: (2,) in the source, (3,) here)" in report.describe()


def test_a_source_for_another_network_is_refused_with_what_did_not_match():
    source = {f"backbone.{k}": v for k, v in build_network(NET).state_dict().items()}
    source["extra.bias"] = torch.zeros(4)
    target = build_network(NET)
    report = transfer_weights(target, source)
    assert report.share == 0 and not report.transferred and len(report.missing) == len(target.state_dict())
    assert "extra.bias" in report.unexpected and report.to_json()["unexpected"] == len(source)
    with pytest.raises(InputError) as err:
        report.require(0.5, "zoo.pt")
    assert len(str(err.value).splitlines()) == 1
    assert str(err.value).startswith("pretrained source zoo.pt does not fit the network: transferred 0% of the "
                                     "parameters (0 tensors); 0 shape-mismatched, ")
    assert "unexpected (e.g. backbone." in str(err.value) and "adapt.min_transfer_share" in str(err.value)


def test_checkpoint_that_needs_pickle_is_refused(tmp_path):
    path = tmp_path / "unsafe.pt"
    torch.save(build_network(NET), path)  # a whole pickled module, not a state dict
    with pytest.raises(InputError, match="not a weights-only checkpoint"):
        load_state(str(path), tracker=None)
