"""The source stage: train the network on the source site, evaluate it on its own grid, log it and
register it as the source model's ``challenger`` (the ``pretrain.alternate`` source: ``alternate``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tl_med.checkpoint import Checkpoint
from tl_med.config import TrainConfig
from tl_med.manifests import manifest_hash
from tl_med.models.zoo import build_network
from tl_med.stages.common import (PretrainResult, StageContext, check_trainable, checkpoints, evaluate, finite,
                                  input_example, log_setup, model_spec, optimizer, run_tags, train)
from tl_med.tracking import ALTERNATE, CHALLENGER, registered_model_name
from tl_med.train import seed_everything

__all__ = ["pretrain_source"]


def pretrain_source(ctx: StageContext, site: str, manifest_path: Path, *, alternate: bool = False) -> PretrainResult:
    """Train the network on the source site, evaluate it, log it and register it (``challenger``).

    ``alternate``: the second source instead, trained with ``pretrain.alternate``'s augmentation
    and registered as a version of the same model with alias ``alternate``."""
    splits = check_trainable(manifest_path, site)
    tc: TrainConfig = ctx.cfg.pretrain
    if alternate:
        if tc.alternate is None:
            raise ValueError("pretrain.alternate is null: there is no alternate source to train")
        tc = tc.model_copy(update={"augment": tc.alternate, "alternate": None})
        ctx = replace(ctx, cfg=ctx.cfg.model_copy(update={"pretrain": tc}))
    name = registered_model_name(ctx.cfg.task, site)
    run_name = f"pretrain-{site}" + (f"-{tc.augment}" if alternate else "")
    with checkpoints(ctx, site, "pretrain", manifest_hash(manifest_path)) as ckpt, \
            ctx.tracker.run(run_name, tags=run_tags(ctx, site, manifest_path, role="source",
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
            description=f"{'Alternate source' if alternate else 'Source'} model for {site} ({tc.augment} "
                        f"augmentation): test Dice {test['dice']:.3f} on {len(splits['test'])} cases.",
            alias=ALTERNATE if alternate else CHALLENGER)
    return PretrainResult(site, run_id, weights_uri, name, version, test["dice"], finite(test["hd95"]),
                          len(splits["training"]), len(splits["test"]))
