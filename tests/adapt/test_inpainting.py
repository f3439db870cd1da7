"""Inpainting pretraining: it learns to restore masked target patches and keeps only the encoder's change."""

import pytest
import torch

from tl_med.adapt.blocks import network_blocks
from tl_med.adapt.inpainting import inpaint, mask_cubes
from tl_med.adapt.run import AdaptData, adapt_model
from tl_med.catalogue import untrained
from tl_med.config import AdaptConfig
from tl_med.sites import RetrainSpec
from tests.adapt.test_strategies import _net
from tests.adapt.test_uda import CPU, _batches, state_twice


def test_mask_cubes_replaces_about_half_the_cubes_and_leaves_the_rest():
    image = torch.randn(2, 1, 16, 16, 16)
    masked, mask = mask_cubes(image, torch.Generator().manual_seed(0))
    assert mask.shape == (2, 1, 16, 16, 16) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert 0.3 < float(mask.mean()) < 0.7
    assert torch.equal(masked[mask == 0], image[mask == 0]) and not torch.equal(masked[mask == 1], image[mask == 1])
    cube = mask[0, 0, :4, :4, :4]  # one grid cell (16 / 4 voxels a side) is masked whole or not at all
    assert cube.min() == cube.max()


def test_inpainting_learns_and_moves_only_the_encoder():
    torch.manual_seed(0)
    net = _net("batch")
    encoder = {n for b in network_blocks(net) if b.encoder for n in b.names}
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    # smooth target patches: the masked cubes can be inferred from their surroundings
    batches = [{"image": torch.nn.functional.avg_pool3d(b["image"], 5, 1, 2) * 3} for b in _batches(n=2)]
    history = inpaint(net, batches, CPU, steps=40, lr=1e-2)
    assert len(history) == 40 and sum(history[-5:]) < 0.8 * sum(history[:5])
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    params = dict(net.named_parameters())
    assert changed & encoder and all(k in encoder for k in changed if k in params)
    assert any(k.endswith("running_mean") for k in changed)  # the encoder's batch-norm statistics are the target's
    assert not net.training and all(p.requires_grad for p in net.parameters())


def test_inpainting_is_deterministic():
    assert torch.equal(*state_twice(lambda net: inpaint(net, _batches(n=2), CPU, steps=3, lr=1e-2, seed=4)))


def test_inpainting_without_supervised_training_after_it_is_refused():
    assert untrained(("inpainting",), 0) == ["inpainting"]
    assert untrained(("inpainting",), 2) == [] and untrained(("inpainting", "mean_teacher"), 0) == []
    with pytest.raises(ValueError, match=r"adapt.steps \['inpainting'\] need supervised training after them"):
        AdaptConfig(n_labelled=0, steps=("inpainting",))
    with pytest.raises(ValueError, match=r"steps \['inpainting'\] need supervised training after them"):
        RetrainSpec(steps=["inpainting"], n_labelled=0)  # a site's retrain: block in sites.yaml
    assert RetrainSpec(steps=["inpainting", "coral"], n_labelled=0).steps == ("inpainting", "coral")
    # a site that has no labelled case at all (n_labelled: all) is refused at run time, before anything trains
    with pytest.raises(ValueError, match="inpainting needs supervised training after it"):
        adapt_model(_net("batch"), {}, AdaptConfig(steps=("inpainting",)), AdaptData([], [], [{"image": "x"}], []),
                    loaders=None, device=CPU, infer=None)
