"""A MONAI bundle's own network (network.name: bundle): read once, stands alone, adapts like any other."""

import json

import pytest
import torch

from tl_med.config import NetworkConfig, PipelineConfig
from tl_med.errors import ConfigError
from tl_med.models.pretrained import load_state, transfer_weights
from tl_med.models.zoo import build_network

SEGRESNET = {"_target_": "SegResNet", "spatial_dims": 3, "in_channels": 1, "out_channels": "@num_classes",
             "init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]}


def _bundle(folder, network_def, extra=None):
    from monai.bundle import ConfigParser

    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "metadata.json").write_text(json.dumps({"version": "0.1.0"}))
    config = {"num_classes": 2, "network_def": network_def, **(extra or {})}
    (folder / "configs" / "inference.json").write_text(json.dumps(config))
    torch.manual_seed(5)
    net = ConfigParser(config).get_parsed_content("network_def")
    torch.save(net.state_dict(), folder / "models" / "model.pt")
    return folder, net


def test_a_bundle_network_is_read_once_and_builds_without_the_bundle(tmp_path):
    folder, original = _bundle(tmp_path / "zoo_segresnet", SEGRESNET)
    base = PipelineConfig.profile("tiny").model_dump(mode="json")
    base["network"] = {"name": "bundle", "bundle": str(folder)}
    cfg = PipelineConfig.model_validate(base)
    assert cfg.network.definition["out_channels"] == 2  # the @num_classes reference resolved
    model = build_network(cfg.network)
    assert type(model).__name__ == "SegResNet"
    report = transfer_weights(model, load_state(str(folder), tracker=None))
    assert report.share == 1.0 and not report.shape_mismatched
    saved = cfg.model_dump_json()
    for path in folder.rglob("*"):
        if path.is_file():
            path.unlink()  # a registered package must not need the bundle any more
    again = build_network(PipelineConfig.model_validate_json(saved).network)
    assert [n for n, _ in again.named_parameters()] == [n for n, _ in original.named_parameters()]


@pytest.mark.parametrize("network_def, extra, words", [
    ({**SEGRESNET, "init_filters": "$int(8)"}, None, "holds the expression"),
    ({**SEGRESNET, "out_channels": "@classes"}, {"classes": {"a": 1}}, "refers to @classes, which is not a plain"),
    ({"spatial_dims": 3}, None, "network_def has no _target_"),
])
def test_a_bundle_network_that_does_not_stand_alone_is_one_line(tmp_path, network_def, extra, words):
    from tl_med.models.bundle_network import read_network_def

    folder = tmp_path / "b"
    (folder / "configs").mkdir(parents=True)
    (folder / "configs" / "inference.json").write_text(json.dumps({"num_classes": 2, "network_def": network_def,
                                                                   **(extra or {})}))
    with pytest.raises(ConfigError, match=words) as err:
        read_network_def(folder)
    assert len(str(err.value).splitlines()) == 1 and "inference.json" in str(err.value)
    with pytest.raises(ConfigError, match="no configs/inference.json"):
        read_network_def(tmp_path / "empty")
    with pytest.raises(ValueError, match="network.name bundle needs network.bundle"):
        NetworkConfig(name="bundle")
    with pytest.raises(ValueError, match="apply to name bundle, not UNet"):
        NetworkConfig(definition={"_target_": "UNet"})


def test_a_config_files_relative_bundle_path_is_relative_to_the_file_and_must_fit_the_task(tmp_path, monkeypatch):
    import yaml

    from tl_med.errors import InputError
    from tl_med.models.spec import ModelSpec

    _bundle(tmp_path / "configs_dir" / "zoo", SEGRESNET)
    base = PipelineConfig.profile("tiny").model_dump(mode="json")
    base["network"] = {"name": "bundle", "bundle": "zoo"}
    (tmp_path / "configs_dir" / "tl.yaml").write_text(yaml.safe_dump(base))
    monkeypatch.chdir(tmp_path)  # not the file's folder
    cfg = PipelineConfig.from_yaml(tmp_path / "configs_dir" / "tl.yaml")
    assert cfg.network.bundle == (tmp_path / "configs_dir" / "zoo").resolve() and cfg.network.definition
    with pytest.raises(InputError, match=r"bundle network .*zoo: out_channels 2 \(the task needs 3\)"):
        ModelSpec.from_config(cfg, task="t", site="s", modality="MR",
                              labels={"0": "background", "1": "a", "2": "b"})
