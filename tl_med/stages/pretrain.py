"""The source stage: train the network on the source site, evaluate it on its own grid, log it and
register it as the source model's ``challenger``."""

from __future__ import annotations

from pathlib import Path

from tl_med.checkpoint import Checkpoint
from tl_med.config import TrainConfig
from tl_med.manifests import manifest_hash
from tl_med.models.zoo import build_network
from tl_med.stages.common import (PretrainResult, StageContext, check_trainable, checkpoints, evaluate, finite,
                                  input_example, log_setup, model_spec, optimizer, run_tags, train)
from tl_med.tracking import registered_model_name
from tl_med.train import seed_everything

__all__ = ["pretrain_source"]


def pretrain_source(ctx: StageContext, site: str, manifest_path: Path) -> PretrainResult:
    """Train the network on the source site, evaluate it, log it and register it (``challenger``)."""
    splits = check_trainable(manifest_path, site)
    tc: TrainConfig = ctx.cfg.pretrain
    name = registered_model_name(ctx.cfg.task, site)
    with checkpoints(ctx, site, "pretrain", manifest_hash(manifest_path)) as ckpt, \
            ctx.tracker.run(f"pretrain-{site}", tags=run_tags(ctx, site, manifest_path, role="source",
                                                           strategy="pretrain")) as run_id:
        log_setup(ctx, run_id, site, manifest_path, {"strategy": "pretrain",
                                                      "n_train_cases": len(splits["training"])})
        spec = model_spec(ctx, site, manifest_path)
        seed_everything(ctx.cfg.seed)
        model = build_network(spec.network)
        train(ctx, run_id, model, splits, optimizer([{"params": model.parameters()}], tc.lr, tc.weight_decay), tc,
              Checkpoint(ckpt / "train.pt"))
        test = evaluate(ctx, run_id, model, splits["test"], spec).summary()
        weights_uri = ctx.tracker.log_state_dict(run_id, model)
        package = ctx.tracker.log_package(run_id, model, spec)
        model_uri = ctx.tracker.log_model(run_id, model, input_example(spec))
        version = ctx.tracker.register(
            model_uri, name, run_id, tags={"test_dice": f"{test['dice']:.4f}", "site": site,
                                           "manifest_sha256": manifest_hash(manifest_path), "package": package,
                                           "modality": spec.modality, "augment": tc.augment,
                                           "epochs": str(tc.epochs)},  # augment: read by tl_med.zero_label
            description=f"Source model for {site}: test Dice {test['dice']:.3f} on {len(splits['test'])} cases.")
    return PretrainResult(site, run_id, weights_uri, name, version, test["dice"], finite(test["hd95"]),
                          len(splits["training"]), len(splits["test"]))
