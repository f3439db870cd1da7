"""The site stage: adapt the pretrained network to one target site beside its honest baselines.

:func:`adapt_site` runs, under one parent MLflow run, the named parts of a site's adaptation:
the shift summary, the source-only baseline, the from-scratch baseline, the adaptation itself
(strategy and steps, checked for forgetting and negative transfer) and its registration
(:mod:`tl_med.stages.registration`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from tl_med.adapt.run import AdaptData, Loaders, adapt_model
from tl_med.catalogue import adapt_epochs, needs_source
from tl_med.checkpoint import Checkpoint
from tl_med.data.loaders import loader_factory
from tl_med.errors import InputError
from tl_med.classify import ClassMetrics
from tl_med.evaluate import metric_name
from tl_med.inference import Predictor
from tl_med.manifests import datalist, load_manifest, manifest_hash
from tl_med.models.pretrained import load_state, transfer_weights
from tl_med.models.spec import ModelSpec
from tl_med.models.zoo import build_network, resolve_device
from tl_med.multitask import attach_class_head
from tl_med.progress import note
from tl_med.quality import estimate_quality, label_volumes_ml
from tl_med.shift import shift_figure, shift_summary
from tl_med.stages.common import (SiteResult, StageContext, check_trainable, checkpoints, dice_on, evaluate,
                                  evaluate_classes, finite,
                                  input_example, log_fit, log_setup, model_spec, optimizer, run_tags, train, training,
                                  window)
from tl_med.stages.registration import register_adapted
from tl_med.tracking import registered_model_name
from tl_med.train import seed_everything
from tl_med.zero_label import source_augmentation, zero_label_caveat

__all__ = ["adapt_site"]


def _child(ctx: StageContext, site: str, manifest_path: Path, strategy: str,
           pretrained: str) -> tuple[str, dict[str, str]]:
    return f"{site}-{strategy}", run_tags(ctx, site, manifest_path, role="target", strategy=strategy,
                                       pretrained_source=pretrained)


def _loaders(ctx: StageContext) -> Loaders:
    return loader_factory(ctx.ws.cache, ctx.cfg.preprocess, seed=ctx.cfg.seed, augment=ctx.cfg.adapt.augment)


def _adapt_data(ctx: StageContext, manifest_path: Path, splits: dict[str, list[dict]],
                source_manifest: Path | None) -> AdaptData:
    """Labelled cases capped at ``n_labelled``; the rest of the training split joins the
    unlabelled pool without its labels. The test split is never used for adaptation."""
    labelled_all = datalist(manifest_path, "training")
    hidden = [{k: v for k, v in it.items() if k != "label"} for it in labelled_all[len(splits["training"]):]]
    return AdaptData(labelled=splits["training"], validation=splits["validation"],
                     unlabelled=datalist(manifest_path, "unlabelled") + hidden,
                     source_train=datalist(source_manifest, "training") if source_manifest else [])


def _negative_transfer(adapted: float, source_only: float, scratch: float | None, margin: float) -> str:
    """'' or why the adapted model counts as negative transfer."""
    worse = [f"{name} {value:.3f}" for name, value in (("source-only", source_only), ("from-scratch", scratch))
             if value is not None and adapted < value - margin]
    return f"adapted Dice {adapted:.3f} below {' and '.join(worse)} by more than {margin}" if worse else ""


@dataclass(frozen=True)
class _SiteJob:
    """What every part of one site's adaptation shares (see :func:`adapt_site`)."""

    ctx: StageContext
    site: str
    manifest_path: Path
    pretrained: str
    splits: dict[str, list[dict]]
    state: dict[str, torch.Tensor]
    source_test: list[dict]
    target_spec: ModelSpec
    source_spec: ModelSpec | None
    checkpoints: Path
    parent: str
    source_volumes: tuple[float, float] | None = None  # source label volumes (mL): mean, sd

    def child(self, strategy: str, pretrained: str | None = None) -> AbstractContextManager[str]:
        """A child run of the site's parent run."""
        run_name, tags = _child(self.ctx, self.site, self.manifest_path, strategy,
                                self.pretrained if pretrained is None else pretrained)
        return self.ctx.tracker.run(run_name, tags=tags, parent_run_id=self.parent)

    def setup(self, run_id: str, **params: object) -> None:
        log_setup(self.ctx, run_id, self.site, self.manifest_path,
                   {**params, "n_labelled": len(self.splits["training"])})

    def source_dice(self, model: torch.nn.Module, when: str) -> float | None:
        return dice_on(self.ctx, model, self.source_test, self.source_spec,
                        f"forgetting {self.site}: source test split {when} adapting")

    def log_estimate(self, run_id: str, model: torch.nn.Module, spec: ModelSpec) -> dict[str, float]:
        """The label-free quality estimate (tl_med.quality) on the target test images, beside the
        true test Dice, so reviewers learn how far to trust it where no labels exist."""
        predictor = Predictor(model, spec, resolve_device(self.ctx.cfg.device))
        images = [{k: v for k, v in it.items() if k != "label"} for it in self.splits["test"]]
        summary = estimate_quality(predictor, images, self.source_volumes).summary()
        self.ctx.tracker.log_metrics(run_id, {f"estimated_{k}" if k != "estimated_dice" else k: v
                                              for k, v in summary.items() if k != "n_cases"})
        return summary


@dataclass(frozen=True)
class _Adapted:
    run_id: str
    metrics: dict[str, float]
    spec: ModelSpec
    model_uri: str
    package: str
    forgetting: float | None
    negative: str
    estimated: float  # the label-free quality estimate on the test images (tl_med.quality)
    classes: ClassMetrics | None = None  # a multi-task model's case-level classification
    val_dice: float | None = None  # the best validation Dice of its training (None: not validated)
    pretrained: str = ""  # the source it was adapted from


def _source_volumes(source_manifest: Path | None) -> tuple[float, float] | None:
    """Mean and sd of the source's training label volumes (mL), for the quality estimate."""
    items = datalist(source_manifest, "training") if source_manifest else []
    return label_volumes_ml(items) if len(items) >= 2 else None


def _log_shift(job: _SiteJob, source_manifest: Path) -> None:
    """The source → target shift (acquisition facts, intensity histograms) with the parent run."""
    summary, samples = shift_summary(source_manifest, job.manifest_path, job.ctx.cfg.preprocess, job.ctx.ws.cache,
                                     seed=job.ctx.cfg.seed)
    job.ctx.tracker.log_json(job.parent, summary, "shift/summary.json")
    job.ctx.tracker.log_metrics(job.parent, {"shift_intensity_w1": summary["intensity_w1"]})
    fig = shift_figure(summary, samples)
    job.ctx.tracker.log_figure(job.parent, fig, "shift/summary.png")
    plt.close(fig)


def _source_only(job: _SiteJob) -> tuple[dict[str, float], float | None]:
    """The pretrained model as it is on the target test split, and its Dice on the source's."""
    with job.child("source_only") as run_id:
        model = build_network(job.target_spec.network)
        transfer_weights(model, job.state)
        metrics = evaluate(job.ctx, run_id, model, job.splits["test"], job.target_spec).summary()
        job.log_estimate(run_id, model, job.target_spec)
        return metrics, job.source_dice(model, "before")


def _network(job: _SiteJob) -> torch.nn.Module:
    """A fresh network for the site (with a class head when the run is multi-task)."""
    model = build_network(job.target_spec.network)
    if job.target_spec.classes:
        attach_class_head(model, len(job.target_spec.classes))
    return model


def _from_scratch(job: _SiteJob) -> tuple[dict[str, float], ClassMetrics | None] | None:
    """The same labelled target cases, a freshly initialised network (None when not configured);
    its test metrics, and its classification when the run is multi-task."""
    ctx, ac = job.ctx, job.ctx.cfg.adapt
    if "scratch" not in ctx.cfg.baselines or not job.splits["training"]:
        return None
    with job.child("scratch", "none") as run_id:
        job.setup(run_id, strategy="scratch")
        seed_everything(ctx.cfg.seed)
        model = _network(job)
        train(ctx, run_id, model, job.splits, optimizer([{"params": model.parameters()}], ctx.cfg.pretrain.lr,
                                                         ac.weight_decay), ac, Checkpoint(job.checkpoints / "scratch.pt"))
        metrics = evaluate(ctx, run_id, model, job.splits["test"], job.target_spec)
        return metrics.summary(), evaluate_classes(ctx, run_id, metrics, job.splits["test"], job.target_spec)


def _adapt(job: _SiteJob, label: str, data: AdaptData, source_only: float, scratch: float | None,
           source_before: float | None, run_label: str | None = None, folder: str = "adapted") -> _Adapted:
    """The configured strategy and steps from the pretrained weights; evaluated, checked for
    forgetting and negative transfer, logged as a model (child run ``run_label``, default ``label``)."""
    ctx, ac, tracker = job.ctx, job.ctx.cfg.adapt, job.ctx.tracker
    with job.child(run_label or label) as run_id:
        job.setup(run_id, strategy=label, pretrained_source=job.pretrained)
        seed_everything(ctx.cfg.seed)
        model = _network(job)  # a multi-task run's class head is new: the transfer report lists it
        report = transfer_weights(model, job.state)
        tracker.log_json(run_id, report.to_json(), "transfer/weights_report.json")
        tracker.log_metrics(run_id, {"transfer_share": report.share,
                                     "transfer_shape_mismatched": len(report.shape_mismatched),
                                     "transfer_missing": len(report.missing),
                                     "transfer_unexpected": len(report.unexpected)})
        with training(tracker, run_id, adapt_epochs(ac.epochs, ac.steps, len(job.splits["training"]))) as on_epoch:
            outcome = adapt_model(model, job.state, ac, data, _loaders(ctx), resolve_device(ctx.cfg.device),
                                  on_epoch=on_epoch, checkpoints=job.checkpoints / folder, infer=window(ctx))
        tracker.log_json(run_id, outcome.info, "adapt/steps.json")
        if outcome.fit is not None:
            log_fit(tracker, run_id, outcome.fit)
        spec = model_spec(ctx, job.site, job.manifest_path, outcome.landmarks).model_copy(
            update={"classes": job.target_spec.classes})
        case_metrics = evaluate(ctx, run_id, model, job.splits["test"], spec)
        metrics = case_metrics.summary()
        classes = evaluate_classes(ctx, run_id, case_metrics, job.splits["test"], spec)
        estimated = job.log_estimate(run_id, model, spec)["estimated_dice"]
        source_after = job.source_dice(model, "after")
        forgetting = None if source_before is None or source_after is None else source_before - source_after
        negative = _negative_transfer(metrics["dice"], source_only, scratch, ac.negative_transfer_margin)
        tracker.log_metrics(run_id, {"source_only_dice": source_only, "scratch_dice": scratch,
                                     "source_dice_before": source_before, "source_dice_after": source_after,
                                     "forgetting": forgetting})
        tracker.set_tags(run_id, {"negative_transfer": "true" if negative else "false",
                                  **({"negative_transfer_reason": negative} if negative else {})})
        tracker.log_state_dict(run_id, model)
        package = tracker.log_package(run_id, model, spec)
        model_uri = tracker.log_model(run_id, model, input_example(spec))
    return _Adapted(run_id, metrics, spec, model_uri, package, forgetting, negative, estimated, classes,
                    outcome.fit.best_val_dice if outcome.fit is not None else None, job.pretrained)


def _adapt_from_each(job: _SiteJob, label: str, data: AdaptData, source_only: float, scratch: float | None,
                     source_before: float | None, alternates: dict[str, dict[str, torch.Tensor]]) -> _Adapted:
    """The adaptation from the source and, when the site has labelled cases, from each alternate
    source (``pretrain.alternate``); the one with the best validation Dice is kept (a tie keeps the
    source's). The test split plays no part in the choice; every candidate is a logged child run,
    tagged ``source_chosen``."""
    first = _adapt(job, label, data, source_only, scratch, source_before)
    if not alternates or not job.splits["training"] or first.val_dice is None:
        return first
    tracker = job.ctx.tracker

    def augment(uri: str) -> str | None:
        return source_augmentation(uri, tracker.client)

    names = {job.pretrained: f"the {augment(job.pretrained) or 'given'} source"}
    candidates = [first]
    for i, (uri, state) in enumerate(alternates.items(), 1):
        alternate = replace(job, pretrained=uri, state=state)
        transfer_weights(model := build_network(job.target_spec.network), state)
        kind = augment(uri) or f"alternate{i}"
        names[uri] = f"the {kind} source"
        candidates.append(_adapt(alternate, label, data, source_only, scratch, alternate.source_dice(model, "before"),
                                 run_label=f"{label}@{kind}", folder=f"adapted-{i}"))
    chosen = max(candidates, key=lambda c: c.val_dice if c.val_dice is not None else float("-inf"))
    for c in candidates:
        tracker.set_tags(c.run_id, {"source_chosen": "true" if c is chosen else "false"})
    tracker.set_tags(job.parent, {"chosen_source": chosen.pretrained})
    note(f"{job.site}: kept the adaptation from {names[chosen.pretrained]} (validation Dice {chosen.val_dice:.3f}, "
         "against " + ", ".join(f"{c.val_dice:.3f} from {names[c.pretrained]}" for c in candidates
                                if c is not chosen and c.val_dice is not None) + ")")
    return chosen


def adapt_site(ctx: StageContext, site: str, manifest_path: Path, pretrained: str,
               source_manifest: Path | None = None, alternates: tuple[str, ...] = ()) -> SiteResult:
    """Adapt the pretrained network to ``site`` beside the source-only and from-scratch baselines.

    One parent run for the site, one child run per baseline and for the adaptation (strategy and
    steps from ``cfg.adapt``). With ``source_manifest``, the source site's data serve the steps
    that need them (harmonisation landmarks, EWC's Fisher, CORAL) and forgetting is measured on
    its test split. The adapted model is registered as a new version of ``tlmed-<task>-<site>``
    that takes alias ``challenger`` unless it shows negative transfer or scores below the current
    challenger on the same test manifest (:mod:`tl_med.challenger`); the baselines' Dice, the
    forgetting, a negative-transfer flag and the challenger decision are version tags.

    ``alternates``: further sources (the ``alternate`` source model); a site with labelled cases
    adapts from each too and keeps the adaptation with the best validation Dice. The baselines and
    a zero-label run use ``pretrained``.
    """
    ac = ctx.cfg.adapt
    splits = check_trainable(manifest_path, site, ac.n_labelled)
    if (needs_source(ac.steps) or ac.ewc > 0) and source_manifest is None:
        raise InputError(f"adapt.steps/ewc of site '{site}' need the source site's manifest")
    classes = _task_classes(manifest_path, site, splits) if ac.strategy == "multitask" else ()
    state = load_state(pretrained, ctx.tracker, ctx.ws)
    target_spec = model_spec(ctx, site, manifest_path).model_copy(update={"classes": classes})
    if "harmonise" in ac.steps and target_spec.n_channels > 1:
        raise InputError(f"adapt step harmonise maps one intensity histogram; site '{site}' has "
                         f"{target_spec.n_channels} channels ({', '.join(target_spec.channels)}): leave it out")
    transfer = transfer_weights(build_network(target_spec.network), state)
    transfer.require(ac.min_transfer_share, pretrained)  # before any run exists
    others = {}
    for uri in alternates if splits["training"] else ():  # a source that cannot be loaded is left out, said once
        try:
            others[uri] = load_state(uri, ctx.tracker, ctx.ws)
        except InputError as exc:
            note(f"{site}: adapting from {pretrained} only; alternate source left out: {exc}")
            continue
        transfer_weights(build_network(target_spec.network), others[uri]).require(ac.min_transfer_share, uri)
    note(f"{site}: {transfer.describe()}")
    source_augment = source_augmentation(pretrained, ctx.tracker.client)
    if not splits["training"] and (caveat := zero_label_caveat(site, pretrained, source_augment)):
        note(caveat)
    label = ac.strategy + "".join(f"+{s}" for s in ac.steps)
    data = _adapt_data(ctx, manifest_path, splits, source_manifest)
    source_spec = model_spec(ctx, load_manifest(source_manifest).name, source_manifest) if source_manifest else None
    with checkpoints(ctx, site, "adapt", manifest_hash(manifest_path), pretrained, *others) as ckpt, \
            ctx.tracker.run(f"adapt-{site}", tags=run_tags(ctx, site, manifest_path, role="target", strategy="parent",
                                                        pretrained_source=pretrained,
                                                        source_augment=source_augment or "unknown")) as parent:
        job = _SiteJob(ctx, site, manifest_path, pretrained, splits, state,
                       datalist(source_manifest, "test") if source_manifest else [],
                       target_spec, source_spec, ckpt, parent,
                       _source_volumes(source_manifest))
        job.setup(parent, strategy=label, pretrained_source=pretrained)
        if source_manifest:
            _log_shift(job, source_manifest)
        source_only_m, source_before = _source_only(job)
        scratch_m, scratch_classes = _from_scratch(job) or (None, None)
        source_only, scratch = source_only_m["dice"], scratch_m["dice"] if scratch_m else None
        adapted = _adapt_from_each(job, label, data, source_only, scratch, source_before, others)
        registration = register_adapted(job, label, adapted, source_only, scratch)
    return SiteResult(site, source_only, adapted.metrics["dice"], scratch, parent, adapted.run_id,
                      registered_model_name(ctx.cfg.task, site), registration.version,
                      challenger=registration.challenger, challenger_reason=registration.reason,
                      forgetting=adapted.forgetting,
                      negative_transfer=adapted.negative, strategy=label,
                      source_only_hd95=finite(source_only_m["hd95"]),
                      scratch_hd95=finite(scratch_m["hd95"]) if scratch_m else None,
                      adapted_hd95=finite(adapted.metrics["hd95"]), n_labelled=len(splits["training"]),
                      n_test=len(splits["test"]), flow_run_id=ctx.flow_run_id, adapted_from=adapted.pretrained,
                      class_dice=_class_dice(target_spec, {"source_only": source_only_m, "from_scratch": scratch_m,
                                                           "adapted": adapted.metrics}),
                      classification={"source_only": None,  # the source model has no class head
                                      "from_scratch": scratch_classes.summary() if scratch_classes else None,
                                      "adapted": adapted.classes.summary() if adapted.classes else None}
                      if target_spec.classes else {})


def _task_classes(manifest_path: Path, site: str, splits: dict[str, list[dict]]) -> tuple[str, ...]:
    """The task's classes for a multi-task run; :class:`InputError` when the site cannot have one."""
    classes = load_manifest(manifest_path).classes
    if not classes:
        raise InputError(f"strategy multitask needs case-level classes: list the task's classes in sites.yaml "
                         f"and give site '{site}' a classes_csv (or datalist classes), then ingest it again")
    if not any(it.get("class", -1) >= 0 for it in splits["training"]):
        raise InputError(f"strategy multitask: none of site '{site}''s {len(splits['training'])} labelled "
                         "training cases has a class")
    return tuple(classes)


def _class_dice(spec: ModelSpec, summaries: dict[str, dict[str, float] | None]) -> dict[str, dict[str, float | None]]:
    """Each foreground class's test Dice per model (empty for a binary task)."""
    classes = [name for value, name in sorted(spec.labels.items(), key=lambda kv: int(kv[0])) if value != "0"]
    if len(classes) < 2:
        return {}
    return {name: {model: finite(m[f"dice_{metric_name(name)}"]) if m else None for model, m in summaries.items()}
            for name in classes}
