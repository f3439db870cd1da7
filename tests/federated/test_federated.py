"""Federated pretraining on NVFlare's simulator over the tiny sites: one job (FedProx, 2 rounds) is
shared by the tests of its registry entry, its metrics, the adaptation that starts from it and
what left the sites. The NVFlare tests skip when the optional ``federated`` extra is missing."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import PHI_MARKERS
from tests.phi import PLANTED
from tl_med.federated import FederatedConfig, federated_model_name, federated_pretrain, nvflare_available
from tl_med.federated.local import proximal_term
from tl_med.manifests import all_items
from tl_med.models.pretrained import load_state, transfer_weights
from tl_med.models.zoo import build_network
from tl_med.stages import StageContext
from tl_med.tracking import CHALLENGER, Tracker

needs_nvflare = pytest.mark.skipif(not nvflare_available(),
                                   reason="nvflare is not installed (pip install -e '.[federated]')")
SITES = ("north", "east")


@pytest.fixture(scope="module")
def federation(ingested, tmp_path_factory):
    """One federated job over the tiny sites, tracked in its own MLflow store."""
    from tl_med.config import PipelineConfig

    ws, _ = ingested
    root = tmp_path_factory.mktemp("federated")
    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}", "tlmed-liver", artifact_root=root / "artifacts")
    ctx = StageContext(ws=ws, cfg=PipelineConfig.profile("tiny"), tracker=tracker)
    fed = FederatedConfig(rounds=2, algorithm="fedprox", mu=0.01)
    result = federated_pretrain(ctx, {s: ws.site_manifest(s) for s in SITES}, fed, folder=root / "job")
    return ctx, result, root


@needs_nvflare
def test_global_model_is_registered_with_per_round_site_metrics(federation):
    ctx, result, _ = federation
    client = ctx.tracker.client
    version = client.get_model_version_by_alias(federated_model_name("liver"), CHALLENGER)
    assert result.model_name == "tlmed-liver-federated" and str(version.version) == result.model_version
    assert version.run_id == result.run_id and version.tags["algorithm"] == "fedprox"
    assert set(result.site_dice) == set(SITES) and all(0 <= d <= 1 for d in result.site_dice.values())
    parent = client.get_run(result.run_id)
    assert {"test_dice", "test_dice_north", "test_dice_east", "bytes_per_round"} <= set(parent.data.metrics)
    assert [m.step for m in client.get_metric_history(result.run_id, "fed_train_loss")] == [0, 1]
    for site in SITES:  # what each site sent back, per round, as the server received it
        run = client.get_run(result.site_runs[site])
        assert run.data.tags["mlflow.parentRunId"] == result.run_id and run.data.tags["site"] == site
        losses = client.get_metric_history(run.info.run_id, "train_loss")
        assert [m.step for m in losses] == [0, 1] and all(np.isfinite(m.value) for m in losses)
        assert {"global_val_dice", "local_val_dice", "n_train"} <= set(run.data.metrics)
        assert run.data.metrics["fedprox_mu"] == pytest.approx(0.01)  # FedProx's mu reached the client
    assert result.bytes_per_round == 2 * len(SITES) * sum(
        p.numel() * 4 for p in build_network(ctx.cfg.network).state_dict().values())


@needs_nvflare
def test_adaptation_starts_from_the_federated_model(federation):
    ctx, result, root = federation
    state = load_state("models:/tlmed-liver-federated@challenger", ctx.tracker)  # what `tl-med adapt` resolves
    job_state = torch.load(next(Path(result.job_folder).glob("server/**/FL_global_model.pt")),
                           weights_only=True)["model"]
    assert set(state) == set(job_state)
    assert all(torch.equal(state[k], torch.as_tensor(job_state[k])) for k in state)
    model = build_network(ctx.cfg.network)
    assert transfer_weights(model, state).share == 1.0


def _image_windows(ws) -> list[bytes]:
    """64-byte runs of every site image's voxels, as stored and as float32 (what a client computes on)."""
    windows = []
    for site in SITES:
        for item in all_items(ws.site_manifest(site)):
            img = nib.load(item["image"])
            for array in (np.asanyarray(img.dataobj), img.get_fdata(dtype=np.float32)):
                flat = np.ascontiguousarray(array).reshape(-1)
                middle = flat[len(flat) // 2:len(flat) // 2 + 64 // flat.itemsize]
                assert np.ptp(middle) > 0  # a run of varying voxels, not background
                windows.append(middle.tobytes())
    return windows


def _contents(path: Path) -> bytes:
    blob = path.read_bytes()
    return gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob


@needs_nvflare
def test_only_weights_and_metrics_leave_the_sites(federation, ingested):
    """The simulator's job folder (server and every site's exchange folder) and the federated run's
    MLflow artifacts hold no image files, no image voxels and no planted PHI."""
    ws, _ = ingested
    _, result, root = federation
    files = [p for p in Path(result.job_folder).rglob("*") if p.is_file()]
    files += [p for p in (root / "artifacts").rglob("*") if p.is_file() and result.run_id in p.parts]
    assert any(p.name == "FL_global_model.pt" for p in files) and any(p.name == "state_dict.pth" for p in files)
    windows = _image_windows(ws)
    markers = [m.encode() for m in (*PHI_MARKERS, *PLANTED.values())]
    for path in files:
        assert not path.name.endswith((".nii", ".nii.gz", ".dcm")), path
        blob = _contents(path)
        assert blob[128:132] != b"DICM" and b"n+1\x00" not in blob[:400], f"{path} is an image file"
        assert not any(w in blob for w in windows), f"{path} holds image voxels"
        assert not any(m in blob for m in markers), f"{path} holds planted PHI"


def test_proximal_term_is_zero_at_the_global_weights_and_grows_away_from_them(tiny_cfg):
    model = build_network(tiny_cfg.network)
    term = proximal_term(model, mu=0.5)
    assert float(term(model).detach()) == 0.0
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    moved = next(model.parameters()).numel()
    assert float(term(model).detach()) == pytest.approx(0.5 / 2 * moved)


def test_federated_config_ties_mu_to_fedprox():
    with pytest.raises(ValueError, match="mu > 0"):
        FederatedConfig(algorithm="fedprox")
    with pytest.raises(ValueError, match="fedprox"):
        FederatedConfig(mu=0.1)
    assert FederatedConfig().rounds == 2


@needs_nvflare
@pytest.mark.parametrize("privacy", ["none", "percentile"])
def test_the_privacy_filter_thins_each_sites_update_before_it_leaves(ingested, tmp_path, privacy):
    """With privacy, every site sends its update (a weight difference) through NVFlare's
    PercentilePrivacy filter; without it, full weights and no filter."""
    import json

    from tl_med.config import PipelineConfig
    from tl_med.federated.job import build_recipe, write_settings

    ws, _ = ingested
    cfg = PipelineConfig.profile("tiny")
    fed = FederatedConfig(privacy=privacy, privacy_percentile=20, privacy_gamma=0.05)
    recipe = build_recipe(cfg, fed, {s: ws.site_manifest(s) for s in SITES}, ws.cache,
                          write_settings(cfg, fed, tmp_path / "settings.json", 2), name="t")
    recipe.export(str(tmp_path / "job"))
    for site in SITES:
        config = json.loads(next((tmp_path / "job").glob(f"*/app_{site}/config/config_fed_client.json")).read_text())
        filters = [f for group in config.get("task_result_filters", []) for f in group["filters"]]
        text = json.dumps(config)
        if privacy == "percentile":
            assert [(f["path"].rsplit(".", 1)[-1], f["args"]["percentile"], f["args"]["gamma"]) for f in filters] == \
                [("PercentilePrivacy", 20, 0.05)]
            assert '"DIFF"' in text
        else:
            assert filters == [] and '"DIFF"' not in text
