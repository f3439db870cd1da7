"""Every network of the catalogue goes through the whole adaptation recipe: a strategy and every
domain-adaptation step, on tiny ingested volumes, and comes out trained, adapted and finite."""

import pytest
import torch

from tests.adapt.test_strategies import PATCH, TINY
from tl_med.adapt.run import AdaptData, adapt_model
from tl_med.catalogue import NETWORKS, STEPS
from tl_med.config import PipelineConfig
from tl_med.data.loaders import loader_factory
from tl_med.inference import window_inferer
from tl_med.manifests import datalist
from tl_med.models.zoo import build_network

CPU = torch.device("cpu")


@pytest.mark.parametrize("name", list(NETWORKS))
def test_progressive_unfreezing_with_every_step_adapts_each_network(ingested, tmp_path, name):
    ws, _ = ingested
    size = PATCH.get(name, 16)
    base = PipelineConfig.profile("tiny").model_dump()
    base["network"] = {**base["network"], **TINY[name], "name": name, "norm": "batch"}  # adabn/tent need it
    base["preprocess"].update(patch_size=(size,) * 3, spacing=(8.0,) * 3)
    base["adapt"].update(strategy="progressive", steps=list(STEPS), epochs=2, unfreeze_every=1, tent_steps=1,
                         inpainting_steps=1, pseudo_threshold=0.51, batch_size=2)
    cfg = PipelineConfig.model_validate(base)
    torch.manual_seed(0)
    model = build_network(cfg.network)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    target, source = ws.site_manifest("east"), ws.site_manifest("north")
    data = AdaptData(labelled=datalist(target, "training")[:1], validation=datalist(target, "validation"),
                     unlabelled=datalist(target, "unlabelled") + [
                         {k: v for k, v in it.items() if k != "label"} for it in datalist(target, "training")[1:]],
                     source_train=datalist(source, "training")[:2])
    make = loader_factory(tmp_path / "cache", cfg.preprocess, seed=0)
    outcome = adapt_model(model, state, cfg.adapt, data, make, CPU,
                          infer=window_inferer(cfg.preprocess.patch_size, cfg.inference))
    assert outcome.info["steps"] == list(STEPS) and outcome.landmarks is not None
    assert outcome.info["adabn_layers"] > 0 and len(outcome.info["tent_entropy_first_last"]) == 2
    moved = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, state[k])]
    assert moved and all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 1, size, size, size))).all()
