"""What every pipeline stage shares: the stage context and results, input checks, and the run
helpers (tags, setup logging, training with progress, checkpoints, native-grid evaluation)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from monai.data import DataLoader

from tl_med.checkpoint import Checkpoint
from tl_med.classify import ClassMetrics, class_metrics
from tl_med.config import AdaptConfig, PipelineConfig, TrainConfig, flatten
from tl_med.data.loaders import loader_factory
from tl_med.data.transforms import cached_dataset
from tl_med.errors import InputError
from tl_med.evaluate import CaseMetrics, Infer
from tl_med.inference import Predictor, evaluate_native, window_inferer
from tl_med.manifests import all_items, datalist, load_manifest, manifest_hash
from tl_med.models.spec import ModelSpec
from tl_med.models.zoo import resolve_device
from tl_med.plots import learning_curve, overlays
from tl_med.progress import activity
from tl_med.tracking import Tracker, code_version
from tl_med.train import EpochLog, FitResult, fit
from tl_med.workspace import Workspace

__all__ = ["StageContext", "PretrainResult", "SiteResult", "warm_cache", "check_trainable", "loader", "run_tags",
           "log_setup", "epoch_logger", "training", "log_fit", "checkpoints", "window", "train", "model_spec",
           "evaluate", "evaluate_classes", "input_example", "optimizer", "finite", "dice_on"]


@dataclass(frozen=True)
class StageContext:
    """What every stage needs: workspace, config, tracker, and how the run was triggered."""

    ws: Workspace
    cfg: PipelineConfig
    tracker: Tracker
    trigger: str = "manual"
    flow_run_id: str = ""
    extra_tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PretrainResult:
    site: str
    run_id: str
    weights_uri: str
    model_name: str
    model_version: str
    test_dice: float
    test_hd95: float | None = None
    n_train: int = 0
    n_test: int = 0


@dataclass(frozen=True)
class SiteResult:
    site: str
    source_only_dice: float
    adapted_dice: float
    scratch_dice: float | None
    parent_run_id: str
    adapted_run_id: str
    model_name: str
    model_version: str
    challenger: bool = True  # whether the version took alias ``challenger`` (tl_med.challenger)
    challenger_reason: str = ""  # why it took it, or why not
    forgetting: float | None = None
    negative_transfer: str = ""
    strategy: str = "finetune"
    source_only_hd95: float | None = None
    scratch_hd95: float | None = None
    adapted_hd95: float | None = None
    n_labelled: int = 0
    n_test: int = 0
    flow_run_id: str = ""
    adapted_from: str = ""  # the source the adapted model started from (one of several: the best on validation)
    # a multi-class task's test Dice of each class: {class: {"source_only", "from_scratch", "adapted"}}
    class_dice: dict[str, dict[str, float | None]] = field(default_factory=dict)
    # a multi-task run's case-level classification: {"source_only", "from_scratch", "adapted"} → metrics
    classification: dict[str, dict[str, float | None] | None] = field(default_factory=dict)

    @property
    def gain(self) -> float:
        return self.adapted_dice - self.source_only_dice


def loader(ctx: StageContext, items: list[dict], *, train: bool, augment: str, batch_size: int = 1) -> DataLoader:
    make = loader_factory(ctx.ws.cache, ctx.cfg.preprocess, seed=ctx.cfg.seed, augment=augment)
    return make(items, train=train, batch_size=batch_size)


def warm_cache(ws: Workspace, cfg: PipelineConfig, manifest_path: Path) -> int:
    """Run the deterministic preprocessing of every case of a site once (fills the disk cache)."""
    ds = cached_dataset(all_items(manifest_path), cfg.preprocess, ws.cache)
    for i in range(len(ds)):
        ds[i]
    return len(ds)


def check_trainable(manifest_path: Path, site: str, n_labelled: int | None = None) -> dict[str, list[dict]]:
    """Training/validation/test items, refusing (:class:`InputError`) sites that cannot be trained or
    evaluated. Flows call it for every site before anything is written to MLflow."""
    splits = {s: datalist(manifest_path, s) for s in ("training", "validation", "test")}
    if n_labelled is not None:
        splits["training"] = splits["training"][:n_labelled]
    if not splits["training"] and n_labelled != 0:
        raise InputError(f"site '{site}' has no labelled training studies ({manifest_path})")
    if not splits["test"]:
        raise InputError(f"site '{site}' has no labelled test studies to evaluate on ({manifest_path})")
    return splits


def run_tags(ctx: StageContext, site: str, manifest_path: Path, **more: str) -> dict[str, str]:
    return {"site": site, "task": ctx.cfg.task, "trigger": ctx.trigger, "code_version": code_version(),
            "manifest_sha256": manifest_hash(manifest_path), "config_hash": ctx.cfg.config_hash(),
            "prefect_flow_run_id": ctx.flow_run_id, **ctx.extra_tags, **more}


def log_setup(ctx: StageContext, run_id: str, site: str, manifest_path: Path,
               params: dict[str, object]) -> None:
    t = ctx.tracker
    digest = manifest_hash(manifest_path)
    t.log_params(run_id, {**flatten(ctx.cfg.model_dump(mode="json")), "site": site,
                          "manifest_sha256": digest, "code_version": code_version(), **params})
    t.log_text(run_id, ctx.cfg.to_yaml(), "config/pipeline.yaml")
    for context in ("train", "validation", "test"):
        t.log_dataset(run_id, manifest_path, digest, context)
    report = ctx.ws.reports / site / "ingest-report.json"
    if report.is_file():  # de-identified: files by keyed ref, reasons without values
        t.log_text(run_id, report.read_text(), "data/ingest-report.json")
        summary = json.loads(report.read_text())["summary"]
        t.log_metrics(run_id, {f"ingest_{k}": float(summary[k]) for k in
                               ("inputs", "converted", "skipped", "quarantined")})


def epoch_logger(tracker: Tracker, run_id: str) -> Callable[[EpochLog], None]:
    return lambda log: tracker.log_metrics(run_id, {"train_loss": log.train_loss, "val_dice": log.val_dice,
                                                    "epoch_seconds": log.seconds}, step=log.epoch)


@contextmanager
def training(tracker: Tracker, run_id: str, epochs: int) -> Iterator[Callable[[EpochLog], None]]:
    """The per-epoch callback of one run's training: MLflow metrics plus a progress report."""
    name = tracker.client.get_run(run_id).info.run_name
    log_epoch = epoch_logger(tracker, run_id)
    with activity(f"train:{run_id}", f"train {name}", total=epochs, unit="epochs") as act:
        def on_epoch(log: EpochLog) -> None:
            log_epoch(log)
            act.advance(loss=log.train_loss, **({"val Dice": log.val_dice} if log.val_dice is not None else {}))

        yield on_epoch


def log_fit(tracker: Tracker, run_id: str, result: FitResult) -> None:
    """The learning curve and the best epoch of a finished fit."""
    fig = learning_curve(result.history, tracker.client.get_run(run_id).info.run_name)
    tracker.log_figure(run_id, fig, "plots/learning_curve.png")
    plt.close(fig)
    tracker.log_metrics(run_id, {"best_epoch": result.best_epoch, "best_val_dice": result.best_val_dice,
                                 **({"stopped_early_epoch": result.stopped_early}
                                    if result.stopped_early is not None else {})})


@contextmanager
def checkpoints(ctx: StageContext, *identity: str) -> Iterator[Path]:
    """The checkpoint folder of one stage's work, removed once the stage has finished.

    Its name hashes what makes the work the same (site, stage, config, manifest, starting weights,
    code version), so a retry of the same work resumes and different work starts afresh.
    """
    key = hashlib.sha256(json.dumps([ctx.cfg.config_hash(), code_version(), *identity]).encode()).hexdigest()
    folder = ctx.ws.root / "checkpoints" / key[:16]
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def window(ctx: StageContext) -> Infer:
    """Whole preprocessed images through a sliding window of the patch size (validation, pseudo-labels)."""
    return window_inferer(ctx.cfg.preprocess.patch_size, ctx.cfg.inference)


def train(ctx: StageContext, run_id: str, model: torch.nn.Module, splits: dict[str, list[dict]],
          optimizer: torch.optim.Optimizer, settings: TrainConfig | AdaptConfig, checkpoint: Checkpoint) -> FitResult:
    """Supervised training on the splits' labelled cases with ``settings``' epochs, batch size, loop
    and augmentation (the source's ``pretrain.augment``; a from-scratch baseline's ``adapt.augment``,
    the adaptation's own, so that the two differ only in where they start)."""
    val = loader(ctx, splits["validation"], train=False, augment=settings.augment) if splits["validation"] else None
    with training(ctx.tracker, run_id, settings.epochs) as on_epoch:
        result = fit(model, loader(ctx, splits["training"], train=True, augment=settings.augment,
                                   batch_size=settings.batch_size), val,
                     optimizer, epochs=settings.epochs, device=resolve_device(ctx.cfg.device), on_epoch=on_epoch,
                     checkpoint=checkpoint, infer=window(ctx), loop=settings)
    log_fit(ctx.tracker, run_id, result)
    return result


def model_spec(ctx: StageContext, site: str, manifest_path: Path, landmarks: tuple[float, ...] | None = None) -> ModelSpec:
    """How a model trained for ``site`` on this manifest's data is applied (see tl_med.models.spec)."""
    manifest = load_manifest(manifest_path)
    channels = tuple(manifest.modality.values()) if len(manifest.modality) > 1 else ()
    cases = [*manifest.training, *manifest.validation, *manifest.test, *manifest.unlabelled]
    modality = "/".join(sorted({c.modality for c in cases})) if channels and cases else manifest.modality.get("0", "?")
    return ModelSpec.from_config(ctx.cfg, task=ctx.cfg.task, site=site, modality=modality,
                                 labels=dict(manifest.labels), landmarks=landmarks, channels=channels)


def evaluate(ctx: StageContext, run_id: str, model: torch.nn.Module, items: list[dict], spec: ModelSpec) -> CaseMetrics:
    """Test metrics on each image's own grid (whole-image inference, inverted to the acquired
    grid); logged as ``test_dice``/``test_hd95`` (and ``test_dice_<class>``/``test_hd95_<class>``
    for each class of a multi-class task) with a per-case CSV and overlays."""
    name = ctx.tracker.client.get_run(run_id).info.run_name
    predictor = Predictor(model, spec, resolve_device(ctx.cfg.device))
    metrics, shown = evaluate_native(predictor, items, f"evaluate {name}", f"eval:{run_id}")
    fig = overlays(shown)
    ctx.tracker.log_figure(run_id, fig, "plots/overlays.png")
    plt.close(fig)
    s = metrics.summary()
    ctx.tracker.log_metrics(run_id, {f"test_{k}": v for k, v in s.items() if k != "n_cases"})
    ctx.tracker.log_text(run_id, metrics.to_csv(), "metrics/test_per_case.csv")
    return metrics


def evaluate_classes(ctx: StageContext, run_id: str, metrics: CaseMetrics, items: list[dict],
                     spec: ModelSpec) -> ClassMetrics | None:
    """Case-level classification of the test cases by a multi-task model, from the class
    probabilities :func:`evaluate` collected in the same pass (``None`` without them): AUC with its
    bootstrap interval, balanced accuracy and ECE, logged as ``test_auc`` … with the per-case
    probabilities."""
    if not spec.classes or not any(metrics.case_classes):
        return None
    ys = [int(item.get("class", -1)) for item in items]
    probs = [[p[name] for name in spec.classes] for p in metrics.case_classes]
    rows = [{"case_id": item["case_id"], "class": spec.classes[y] if y >= 0 else None, "probabilities": p}
            for item, y, p in zip(items, ys, metrics.case_classes)]
    result = class_metrics(ys, probs, seed=ctx.cfg.seed)
    ctx.tracker.log_metrics(run_id, {f"test_{k}": v for k, v in result.summary().items() if k != "n_cases"})
    ctx.tracker.log_json(run_id, {"classes": list(spec.classes), "metrics": result.summary(), "cases": rows},
                         "metrics/test_classes.json")
    return result


def input_example(spec: ModelSpec) -> np.ndarray:
    return np.zeros((2, spec.n_channels, *spec.preprocess.patch_size), dtype=np.float32)


def optimizer(groups: list[dict], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)



def finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None

def dice_on(ctx: StageContext, model: torch.nn.Module, items: list[dict], spec: ModelSpec | None,
             description: str) -> float | None:
    """Mean test Dice of ``model`` on ``items`` (the source test split, for forgetting), on the
    images' own grids."""
    if not items or spec is None:
        return None
    predictor = Predictor(model, spec, resolve_device(ctx.cfg.device))
    return evaluate_native(predictor, items, description)[0].summary()["dice"]
