"""The catalogue is the one place for strategy, step and augmentation names: everything else follows it."""

from __future__ import annotations

import inspect

import pytest
from prefect.utilities.callables import parameter_schema
from typer.testing import CliRunner

from tl_med.adapt import run as adapt_run
from tl_med.adapt.strategies import BUILDERS, build_strategy
from tl_med.catalogue import AUGMENTATIONS, NETWORKS, STEPS, STRATEGIES, adapt_epochs, needs_batch_norm, needs_source
from tl_med.cli import app
from tl_med.config import AdaptConfig, PipelineConfig
from tl_med.data.transforms import augmentation
from tl_med.sites import RetrainSpec


def test_config_sites_and_the_retrain_flow_accept_exactly_the_catalogue():
    from flows.retrain import site_retrain

    for step in STEPS:
        assert AdaptConfig(steps=(step,)).steps == (step,) and RetrainSpec(steps=[step]).steps == (step,)
    for strategy in STRATEGIES:
        assert AdaptConfig(strategy=strategy).strategy == strategy == RetrainSpec(strategy=strategy).strategy
    for bad in ({"steps": ["dann"]}, {"strategy": "lora"}):
        with pytest.raises(ValueError):
            AdaptConfig(**bad)
        with pytest.raises(ValueError):
            RetrainSpec(**bad)
    # the deployment's parameter form (Prefect UI, `prefect deployment run`) offers the same choices
    schema = parameter_schema(site_retrain.fn).model_dump()["properties"]
    assert schema["steps"]["anyOf"][0]["items"]["enum"] == list(STEPS)
    assert schema["strategy"]["anyOf"][0]["enum"] == list(STRATEGIES)


def test_every_catalogued_name_has_an_implementation():
    from tl_med.models import zoo

    assert set(BUILDERS) == set(STRATEGIES) and set(zoo.BUILDERS) == set(NETWORKS)
    for strategy in STRATEGIES:
        assert build_strategy(AdaptConfig(strategy=strategy)).name == strategy
    source = inspect.getsource(adapt_run.adapt_model) + inspect.getsource(adapt_run._extra_losses)
    assert all(f'"{step}" in cfg.steps' in source for step in STEPS) and "trains_on_source" in source
    for kind in AUGMENTATIONS:
        assert isinstance(augmentation(kind), list)
    assert AdaptConfig(augment="contrast").augment == "contrast"


def test_what_the_pipeline_derives_from_the_catalogue():
    assert needs_batch_norm(["harmonise", "adabn", "tent"]) == ["adabn", "tent"]
    assert needs_source(["self_training", "coral", "harmonise"]) == ["coral", "harmonise"]
    assert adapt_epochs(10, (), 4) == 10 and adapt_epochs(10, ("self_training",), 4) == 15
    assert adapt_epochs(10, ("self_training",), 0) == 5 and adapt_epochs(10, ("coral",), 0) == 10
    base = PipelineConfig.profile("tiny").model_dump()
    with pytest.raises(ValueError, match="adabn.*batch"):
        PipelineConfig.model_validate({**base, "adapt": {**base["adapt"], "steps": ["harmonise", "adabn"]}})


def test_cli_help_lists_every_step_and_strategy():
    result = CliRunner().invoke(app, ["adapt", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    assert all(name in result.output for name in (*STEPS, *STRATEGIES))
    assert STEPS["self_training"].summary in result.output


def test_zero_labels_without_steps_runs_the_zero_label_recipe():
    from tl_med.catalogue import ZERO_LABEL_STEPS
    from tl_med.cli.common import adapt_steps

    cfg = PipelineConfig.profile("tiny")
    assert adapt_steps(cfg, None, 0) == ZERO_LABEL_STEPS and set(ZERO_LABEL_STEPS) <= set(STEPS)
    assert adapt_steps(cfg, "", 0) == () and adapt_steps(cfg, "harmonise", 0) == ("harmonise",)
    assert adapt_steps(cfg, None, 4) is None and adapt_steps(cfg, None, None) is None
    configured = cfg.model_copy(update={"adapt": cfg.adapt.model_copy(update={"steps": ("coral",)})})
    assert adapt_steps(configured, None, 0) is None  # the config's own steps stand
