import torch
from monai.data import DataLoader

import pytest

from tl_med.checkpoint import Checkpoint
from tl_med.config import LoopConfig, NetworkConfig
from tl_med.data.transforms import cached_dataset
from tl_med.inference import window_inferer
from tl_med.manifests import datalist
from tl_med.models.zoo import build_network
from tl_med.train import fit, seed_everything


def _train_once(ws, cfg, epochs=3, checkpoint=None, on_epoch=None, loop=None, optimizer=None):
    seed_everything(cfg.seed)
    items = datalist(ws.site_manifest("north"), "training")
    loader = DataLoader(cached_dataset(items, cfg.preprocess, ws.cache, augment="intensity", sample_patches=True),
                        batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(cfg.seed))
    val = DataLoader(cached_dataset(datalist(ws.site_manifest("north"), "validation"), cfg.preprocess, ws.cache))
    model = build_network(cfg.network)
    logs = []
    opt = (optimizer or torch.optim.AdamW)(model.parameters(), lr=1e-2)
    result = fit(model, loader, val, opt, epochs=epochs, device=torch.device("cpu"),
                 on_epoch=on_epoch or logs.append, checkpoint=checkpoint,
                 infer=window_inferer(cfg.preprocess.patch_size, cfg.inference), loop=loop)
    return model, result, logs


def test_fit_logs_every_epoch_and_keeps_the_best_weights(ingested, tiny_cfg):
    ws, _ = ingested
    model, result, logs = _train_once(ws, tiny_cfg)
    assert [log.epoch for log in logs] == [0, 1, 2]
    assert logs[-1].train_loss < logs[0].train_loss
    best = max(range(3), key=lambda e: logs[e].val_dice)
    assert result.best_epoch == best and result.best_val_dice == logs[best].val_dice
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in result.best_state.items())


def test_same_seed_same_weights_on_cpu(ingested, tiny_cfg):
    ws, _ = ingested
    a, _, _ = _train_once(ws, tiny_cfg, epochs=2)
    b, _, _ = _train_once(ws, tiny_cfg, epochs=2)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_preprocessing_keeps_the_whole_image_at_the_model_spacing_and_samples_patches(ingested, tiny_cfg):
    import nibabel as nib
    import numpy as np

    ws, _ = ingested
    pre = tiny_cfg.preprocess
    for site in ("north", "east"):
        items = datalist(ws.site_manifest(site), "test")
        whole = cached_dataset(items, pre, ws.cache)[0]
        native = nib.load(items[0]["image"])
        extent = np.abs(native.affine[:3, :3] @ np.array(native.shape)).round()  # mm covered per world axis
        expected = sorted(np.round(extent / np.array(pre.spacing)).astype(int))
        assert sorted(whole["image"].shape[1:]) == pytest.approx(expected, abs=1)  # no crop, no pad
        assert set(whole["label"].unique().tolist()) <= {0.0, 1.0} and whole["label"].sum() > 0
        sampled = cached_dataset(items, pre, ws.cache, sample_patches=True)[0]
        assert len(sampled) == pre.patches_per_volume
        assert all(tuple(p["image"].shape) == (1, *pre.patch_size) == tuple(p["label"].shape) for p in sampled)
    assert any((ws.cache).rglob("*.pt"))  # the deterministic prefix was cached on disk


class Killed(Exception):
    pass


@pytest.mark.parametrize("loop", [None, LoopConfig(lr_schedule="cosine", warmup_epochs=1),
                                  LoopConfig(lr_schedule="plateau", plateau_patience=1, grad_accumulation=2)],
                         ids=["constant", "cosine", "plateau"])
def test_a_fit_interrupted_after_an_epoch_resumes_to_the_same_weights(ingested, tiny_cfg, tmp_path, loop):
    ws, _ = ingested
    straight, straight_result, _ = _train_once(ws, tiny_cfg, epochs=4, loop=loop)
    ckpt = Checkpoint(tmp_path / "fit.pt")

    def die_after_epoch_1(log):
        if log.epoch == 1:
            raise Killed  # the checkpoint of epoch 1 is already on disk, as after a SIGKILL here

    with pytest.raises(Killed):
        _train_once(ws, tiny_cfg, epochs=4, checkpoint=ckpt, on_epoch=die_after_epoch_1, loop=loop)
    logs = []
    resumed, result, _ = _train_once(ws, tiny_cfg, epochs=4, checkpoint=ckpt, on_epoch=logs.append, loop=loop)
    assert [log.epoch for log in logs] == [0, 1, 2, 3]  # epochs 0-1 replayed from the checkpoint, 2-3 trained
    assert logs[:2] == result.history[:2] and result.best_epoch == straight_result.best_epoch
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in straight.state_dict().items())
    # the last epoch's checkpoint resumes to nothing left to do ... but the same weights
    again, _, _ = _train_once(ws, tiny_cfg, epochs=4, checkpoint=ckpt, on_epoch=lambda log: None, loop=loop)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in straight.state_dict().items())


class _Recording(torch.optim.SGD):
    """SGD that records each step's learning rate."""

    rates: list[float] = []

    def step(self, closure=None):
        _Recording.rates.append(self.param_groups[0]["lr"])
        return super().step(closure)


def test_warmup_then_cosine_sets_each_epochs_rate_and_accumulation_steps_less_often(ingested, tiny_cfg):
    ws, _ = ingested
    _Recording.rates = []
    loop = LoopConfig(lr_schedule="cosine", warmup_epochs=1, grad_accumulation=2)
    _train_once(ws, tiny_cfg, epochs=3, loop=loop, optimizer=_Recording)
    batches = -(-len(datalist(ws.site_manifest("north"), "training")) // 2)  # batch size 2
    per_epoch = -(-batches // 2)
    assert batches > 1 and len(_Recording.rates) == 3 * per_epoch  # a step per 2 batches (and a last partial one)
    assert [r for r in _Recording.rates[::per_epoch]] == pytest.approx([0.5e-2, 1e-2, 0.5e-2])


def test_early_stopping_ends_after_its_patience_and_keeps_the_best_weights(ingested, tiny_cfg, tmp_path):
    ws, _ = ingested
    flat = lambda image, model: torch.zeros(image.shape[0], 2, *image.shape[2:])  # noqa: E731 - same Dice each epoch
    seed_everything(0)
    items = datalist(ws.site_manifest("north"), "training")
    loader = DataLoader(cached_dataset(items, tiny_cfg.preprocess, ws.cache, sample_patches=True), batch_size=2)
    val = DataLoader(cached_dataset(datalist(ws.site_manifest("north"), "validation"), tiny_cfg.preprocess, ws.cache))
    model = build_network(tiny_cfg.network)
    ckpt = Checkpoint(tmp_path / "fit.pt")
    result = fit(model, loader, val, torch.optim.SGD(model.parameters(), lr=1e-2), epochs=10,
                 device=torch.device("cpu"), infer=flat, loop=LoopConfig(early_stopping=2), checkpoint=ckpt)
    assert len(result.history) == 3 and result.stopped_early == 2 and result.best_epoch == 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in result.best_state.items())
    # a retry that finds the checkpoint of the stopped fit does not train on
    again = build_network(tiny_cfg.network)
    resumed = fit(again, loader, val, torch.optim.SGD(again.parameters(), lr=1e-2), epochs=10,
                  device=torch.device("cpu"), infer=flat, loop=LoopConfig(early_stopping=2), checkpoint=ckpt)
    assert len(resumed.history) == 3 and resumed.stopped_early == 2
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in result.best_state.items())


def test_a_partial_last_accumulation_averages_its_own_batches():
    from tl_med.train import _group_size

    assert [_group_size(s, 5, 2) for s in range(5)] == [2, 2, 2, 2, 1]
    assert [_group_size(s, 3, 4) for s in range(3)] == [3, 3, 3]
    assert _group_size(7, None, 4) == 4  # a loader without a length: the configured size
    # one step over a whole epoch of 3 batches equals the step on their mean loss
    torch.manual_seed(0)
    batches = [{"image": torch.randn(1, 1, 16, 16, 16), "label": (torch.rand(1, 1, 16, 16, 16) > 0.5).float()}
               for _ in range(3)]
    nets = [build_network(NetworkConfig(channels=(4, 8), strides=(2,), num_res_units=0)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opt = torch.optim.SGD(nets[0].parameters(), lr=0.1)
    fit(nets[0], batches, None, opt, epochs=1, device=torch.device("cpu"), loop=LoopConfig(grad_accumulation=8))
    from monai.losses import DiceCELoss

    loss_fn, ref = DiceCELoss(to_onehot_y=True, softmax=True), torch.optim.SGD(nets[1].parameters(), lr=0.1)
    nets[1].train()
    (sum(loss_fn(nets[1](b["image"]), b["label"].long()) for b in batches) / 3).backward()
    ref.step()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(nets[0].parameters(), nets[1].parameters()))
