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
