from pathlib import Path

import pytest
from pydantic import ValidationError

from tl_med.config import PipelineConfig, flatten
from tl_med.errors import ConfigError


def test_profiles_are_frozen_and_hash_identifies_content():
    demo, tiny = PipelineConfig.profile("demo"), PipelineConfig.profile("tiny")
    assert demo.config_hash() == PipelineConfig.profile("demo").config_hash()
    assert demo.config_hash() != tiny.config_hash()
    with pytest.raises(ValidationError):
        demo.seed = 3  # type: ignore[misc]


def test_unknown_profile_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        PipelineConfig.profile("huge")


def test_yaml_roundtrip_and_errors_name_file_and_field(tmp_path: Path):
    cfg = PipelineConfig.profile("tiny", seed=7)
    path = tmp_path / "cfg.yaml"
    path.write_text(cfg.to_yaml())
    assert PipelineConfig.from_yaml(path) == cfg
    path.write_text("adapt:\n  epochs: 0\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml: field 'adapt.epochs'"):
        PipelineConfig.from_yaml(path)
    path.write_text("adapt: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        PipelineConfig.from_yaml(path)


def test_flatten_gives_dotted_params():
    flat = flatten(PipelineConfig.profile("demo").model_dump(mode="json"))
    assert flat["adapt.lr"] == 1e-3 and flat["preprocess.patch_size"] == "[48, 48, 48]"


@pytest.mark.parametrize("network, preprocess, words", [
    ({"name": "AttentionUnet"}, {}, "AttentionUnet is built with batch norm only: set network.norm: batch"),
    ({"name": "SwinUNETR", "channels": [12], "strides": []}, {"patch_size": [48, 48, 48]},
     "preprocess.patch_size [48, 48, 48] must be divisible by 32 for network SwinUNETR"),
    ({"name": "SwinUNETR", "channels": [12], "strides": []}, {"patch_size": [32, 32, 32]},
     "leaves one voxel at the bottleneck of SwinUNETR, where instance norm cannot work"),
    ({"name": "SwinUNETR", "channels": [16], "strides": []}, {"patch_size": [64, 64, 64]},
     "SwinUNETR needs channels[0] to be a multiple of 12"),
    ({"name": "DynUNet", "strides": [2, 2]}, {}, "DynUNet needs one stride per level after the first"),
    ({"name": "ResNet50"}, {}, "Input should be 'UNet', 'DynUNet', 'SegResNet', 'AttentionUnet', 'SwinUNETR' or 'bundle'"),
])
def test_a_network_that_does_not_fit_its_patches_or_norm_is_refused_by_name(network, preprocess, words):
    base = PipelineConfig.profile("demo").model_dump(mode="json")
    base["network"].update(network)
    base["preprocess"].update(preprocess)
    with pytest.raises(ValidationError, match=words.replace("[", r"\[").replace("]", r"\]")):
        PipelineConfig.model_validate(base)
    for name, extra in (("DynUNet", {}), ("SegResNet", {}), ("AttentionUnet", {"norm": "batch"}),
                        ("SwinUNETR", {"channels": [12], "strides": []})):
        base = PipelineConfig.profile("demo").model_dump(mode="json")
        base["network"].update({"name": name, **extra})
        base["preprocess"]["patch_size"] = [64, 64, 64] if name == "SwinUNETR" else [48, 48, 48]
        assert PipelineConfig.model_validate(base).network.name == name


@pytest.mark.parametrize("profile", ["tiny", "demo", "realistic"])
def test_every_catalogue_network_fits_every_profile(profile):
    from tl_med.catalogue import NETWORKS, patch_divisor

    for name in (n for n in NETWORKS if n != "bundle"):
        cfg = PipelineConfig.profile(profile).with_network(name)
        n = cfg.network
        assert n.name == name and all(p % patch_divisor(name, n.channels, n.strides) == 0
                                      for p in cfg.preprocess.patch_size)
        assert cfg.preprocess.spacing == PipelineConfig.profile(profile).preprocess.spacing
    assert PipelineConfig.profile("demo").with_network("SwinUNETR").network.channels == (12,)
    with pytest.raises(ValueError, match="unknown network 'VNet'"):
        PipelineConfig.profile(profile).with_network("VNet")


def test_the_alternate_source_is_another_augmentation_or_none(tmp_path: Path):
    demo = PipelineConfig.profile("demo").pretrain
    assert (demo.augment, demo.alternate) == ("contrast", "intensity")  # two sources by default
    assert PipelineConfig.profile("tiny").pretrain.alternate is None  # the tests' profile: one
    path = tmp_path / "cfg.yaml"
    path.write_text("pretrain:\n  augment: intensity\n")
    with pytest.raises(ConfigError, match=r"pretrain.alternate is pretrain.augment \(intensity\) again: set it to "
                                          r"another augmentation, or to null for one source"):
        PipelineConfig.from_yaml(path)
    path.write_text("pretrain:\n  augment: intensity\n  alternate: contrast\n")
    assert PipelineConfig.from_yaml(path).pretrain.alternate == "contrast"
    path.write_text("pretrain:\n  alternate: null\n")
    assert PipelineConfig.from_yaml(path).pretrain.alternate is None
