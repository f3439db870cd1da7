"""The classification stage: a case-level classifier adapted to one target site beside its baselines.

:func:`classify_site` runs, under one parent MLflow run ``classify-<site>``:

* ``classify-source``: the classifier trained on the source site's labelled cases (training and
  validation splits; from ``classifier.pretrained`` when given), evaluated on the source's test
  split and, as it is, on the target's (the **source-only** baseline);
* ``classify-adabn``: the source classifier with its batch-norm statistics re-estimated on the
  target's images outside the test split (zero labels);
* ``classify-scratch``: the target's labelled training cases, a freshly initialised classifier;
* ``classify-<strategy>``: those cases, from the source classifier, with ``adapt.strategy`` (and
  its layer-wise rates or unfreezing schedule), checked for forgetting (source test AUC lost) and
  negative transfer (AUC below source-only or from-scratch by more than
  ``classifier.negative_transfer_margin``).

Every model gets AUC with its bootstrap 95 % interval, balanced accuracy and ECE on the target's
test split, and the shortcut check (:mod:`tl_med.shortcut`); per-case probabilities are logged by
de-identified case id.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tl_med.adapt.strategies import Strategy, build_strategy
from tl_med.adapt.uda import adabn, norm_layers
from tl_med.catalogue import CLASSIFIER_STRATEGIES
from tl_med.classifier import class_loader, fit_classifier, predict_probabilities, with_class
from tl_med.classify import ClassMetrics, class_metrics
from tl_med.errors import InputError
from tl_med.manifests import datalist, load_manifest
from tl_med.models.classifiers import build_classifier
from tl_med.models.pretrained import load_state, transfer_weights
from tl_med.models.zoo import resolve_device
from tl_med.progress import activity
from tl_med.shortcut import Shortcut, scanner_groups, shortcut_check
from tl_med.stages.common import StageContext, log_setup, optimizer, run_tags
from tl_med.train import seed_everything

__all__ = ["ClassifyResult", "classify_site", "check_strategy", "MODELS"]

# the rows of a classification run, in the order they are reported
MODELS = ("source_only", "source_adabn", "from_scratch", "adapted")


@dataclass(frozen=True)
class ClassifyResult:
    site: str
    source: str
    network: str
    strategy: str
    classes: tuple[str, ...]
    n_labelled: int
    n_test: int
    parent_run_id: str
    metrics: dict[str, dict[str, float | None] | None]  # MODELS → ClassMetrics.summary() (None: not run)
    shortcut: dict[str, dict[str, object]]  # MODELS → Shortcut.summary()
    source_auc: float | None = None  # the source classifier on the source's own test split
    forgetting: float | None = None  # source test AUC lost by adapting
    negative_transfer: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Job:
    ctx: StageContext
    site: str
    manifest: Path
    source: str
    source_manifest: Path
    classes: tuple[str, ...]
    in_channels: int
    parent: str
    test: list[dict]  # the target's test cases with a class

    def child(self, name: str, **tags: str):
        return self.ctx.tracker.run(name, tags=run_tags(self.ctx, self.site, self.manifest, role="target",
                                                        task_kind="classification", **tags),
                                    parent_run_id=self.parent)

    def network(self) -> torch.nn.Module:
        return build_classifier(self.ctx.cfg.classifier, in_channels=self.in_channels, n_classes=len(self.classes))

    def loader(self, items: list[dict], *, train: bool, batch_size: int | None = None):
        return class_loader(items, self.ctx.cfg, self.ctx.ws.cache, train=train, seed=self.ctx.cfg.seed,
                            batch_size=batch_size)

    def fit(self, run_id: str, model: torch.nn.Module, items: list[dict], epochs: int,
            groups: list[dict], strategy: Strategy | None = None) -> None:
        c = self.ctx.cfg.classifier
        name = self.ctx.tracker.client.get_run(run_id).info.run_name
        with activity(f"train:{run_id}", f"train {name}", total=epochs, unit="epochs") as act:
            def on_epoch(log) -> None:
                self.ctx.tracker.log_metrics(run_id, {"train_loss": log.train_loss}, step=log.epoch)
                act.advance(loss=log.train_loss)

            fit_classifier(model, self.loader(items, train=True), optimizer(groups, c.lr, c.weight_decay),
                           epochs=epochs, device=resolve_device(self.ctx.cfg.device), strategy=strategy,
                           on_epoch=on_epoch)

    def evaluate(self, run_id: str, model: torch.nn.Module, items: list[dict], train_items: list[dict],
                 train_manifest: Path, prefix: str = "test") -> tuple[ClassMetrics, Shortcut]:
        """Metrics and the shortcut check of ``model`` on ``items`` (of this job's target site unless
        ``prefix`` says otherwise), logged as ``<prefix>_auc`` …"""
        ids, y, probs = predict_probabilities(model, self.loader(items, train=False),
                                              resolve_device(self.ctx.cfg.device))
        metrics = class_metrics(y, probs, seed=self.ctx.cfg.seed)
        groups = {**scanner_groups(train_manifest), **scanner_groups(self.manifest)}
        check = shortcut_check([groups[it["case_id"]] for it in train_items], [it["class"] for it in train_items],
                               [groups.get(i, ()) for i in ids], y, probs)
        tracker = self.ctx.tracker
        tracker.log_metrics(run_id, {f"{prefix}_{k}": v for k, v in metrics.summary().items() if k != "n_cases"})
        tracker.log_metrics(run_id, {f"{prefix}_shortcut_flagged": float(check.flagged)})
        tracker.set_tags(run_id, {f"{prefix}_shortcut": check.reason})
        tracker.log_json(run_id, {"classes": list(self.classes), "metrics": metrics.summary(),
                                  "shortcut": check.summary(),
                                  "cases": [{"case_id": i, "class": self.classes[int(t)], "probabilities":
                                             dict(zip(self.classes, map(float, p)))}
                                            for i, t, p in zip(ids, y, probs)]}, f"metrics/{prefix}_classes.json")
        return metrics, check


def _items(manifest: Path, *splits: str) -> list[dict]:
    return with_class([it for s in splits for it in datalist(manifest, s)])


def _classes(site: str, manifest: Path, source: str, source_manifest: Path) -> tuple[str, ...]:
    classes, theirs = load_manifest(source_manifest).classes, load_manifest(manifest).classes
    if not classes:
        raise InputError(f"site '{source}' has no case-level classes: name them in sites.yaml (classes: [...]) "
                         "and give each site a classes_csv")
    if theirs != classes:
        raise InputError(f"site '{site}' has classes {list(theirs)}, the source '{source}' {list(classes)}: "
                         "re-ingest both with the same sites.yaml")
    return tuple(classes)


def _train_source(job: _Job, items: list[dict], test: list[dict], target_test: list[dict]):
    """The source classifier, its AUC on its own test split, and its target test metrics."""
    ctx, c = job.ctx, job.ctx.cfg.classifier
    with job.child(f"classify-source-{job.source}", strategy="classify-source") as run_id:
        log_setup(ctx, run_id, job.source, job.source_manifest, {"n_train_cases": len(items),
                                                                  "pretrained_source": c.pretrained or "none"})
        seed_everything(ctx.cfg.seed)
        model = job.network()
        if c.pretrained:
            report = transfer_weights(model, load_state(c.pretrained, ctx.tracker, ctx.ws))
            ctx.tracker.log_json(run_id, report.to_json(), "transfer/weights_report.json")
            ctx.tracker.log_metrics(run_id, {"transfer_share": report.share})
        job.fit(run_id, model, items, c.epochs, [{"params": model.parameters()}])
        ctx.tracker.log_state_dict(run_id, model)
        own = job.evaluate(run_id, model, test, items, job.source_manifest, prefix="source_test")[0] if test else None
        on_target = job.evaluate(run_id, model, target_test, items, job.source_manifest)
    return model, (own.auc if own else None), on_target


def _adabn(job: _Job, source_model: torch.nn.Module, images: list[dict], source_items: list[dict]):
    if len(images) < 2 or not norm_layers(source_model):
        return None  # batch statistics need two images at least
    with job.child("classify-adabn", strategy="classify-adabn") as run_id:
        log_setup(job.ctx, run_id, job.site, job.manifest, {"strategy": "adabn", "n_labelled": 0})
        model = copy.deepcopy(source_model)
        batches = job.loader(images, train=False, batch_size=min(len(images), job.ctx.cfg.classifier.batch_size))
        layers = adabn(model, batches, resolve_device(job.ctx.cfg.device))
        job.ctx.tracker.log_metrics(run_id, {"adabn_layers": layers})
        return job.evaluate(run_id, model, job.test, source_items, job.source_manifest)


def _scratch(job: _Job, labelled: list[dict]) -> tuple[ClassMetrics, Shortcut]:
    """The labelled target cases, a freshly initialised classifier."""
    ctx = job.ctx
    with job.child("classify-scratch", strategy="classify-scratch") as run_id:
        log_setup(ctx, run_id, job.site, job.manifest, {"strategy": "scratch", "n_labelled": len(labelled)})
        seed_everything(ctx.cfg.seed)
        model = job.network()
        job.fit(run_id, model, labelled, ctx.cfg.classifier.adapt_epochs, [{"params": model.parameters()}])
        return job.evaluate(run_id, model, job.test, labelled, job.manifest)


def _adapt(job: _Job, strategy: Strategy, source_model: torch.nn.Module, labelled: list[dict],
           source_items: list[dict], source_test: list[dict],
           source_auc: float | None) -> tuple[ClassMetrics, Shortcut, float | None]:
    """The labelled target cases from the source classifier with the strategy; its metrics,
    shortcut check and forgetting (source test AUC lost)."""
    ctx = job.ctx
    with job.child(f"classify-{strategy.name}", strategy=f"classify-{strategy.name}") as run_id:
        log_setup(ctx, run_id, job.site, job.manifest, {"strategy": strategy.name, "n_labelled": len(labelled)})
        seed_everything(ctx.cfg.seed)
        model = copy.deepcopy(source_model)
        job.fit(run_id, model, labelled, ctx.cfg.classifier.adapt_epochs, strategy.param_groups(model), strategy)
        for p in model.parameters():
            p.requires_grad_(True)
        metrics, check = job.evaluate(run_id, model, job.test, labelled, job.manifest)
        after = (job.evaluate(run_id, model, source_test, source_items, job.source_manifest,
                              prefix="source_test")[0].auc if source_test else None)
        forgetting = source_auc - after if source_auc is not None and after is not None else None
        ctx.tracker.log_metrics(run_id, {"forgetting_auc": forgetting})
        return metrics, check, forgetting


def check_strategy(name: str) -> None:
    """Refuse (:class:`InputError`) a strategy that does not apply to a classifier."""
    if name not in CLASSIFIER_STRATEGIES:
        raise InputError(f"classification runs the {', '.join(CLASSIFIER_STRATEGIES)} strategy; {name} is a "
                         f"segmentation strategy (tl-med adapt --strategy {name})")


def classify_site(ctx: StageContext, site: str, manifest: Path, source: str, source_manifest: Path) -> ClassifyResult:
    """Adapt a classifier to ``site`` beside the source-only, AdaBN and from-scratch baselines."""
    classes = _classes(site, manifest, source, source_manifest)
    c, ac = ctx.cfg.classifier, ctx.cfg.adapt
    check_strategy(ac.strategy)
    source_items = _items(source_manifest, "training", "validation")
    source_test = _items(source_manifest, "test")
    labelled = _items(manifest, "training")[:ac.n_labelled]
    test = _items(manifest, "test")
    if not source_items:
        raise InputError(f"site '{source}' has no training cases with a class ({source_manifest})")
    if not test:
        raise InputError(f"site '{site}' has no test cases with a class to evaluate on ({manifest})")
    # AdaBN's target images: every case outside the test split (labels and classes unused; the
    # items stay as cached for segmentation, so their preprocessing is reused)
    images = [it for split in ("training", "validation", "unlabelled") for it in datalist(manifest, split)]
    in_channels = max(1, len(load_manifest(manifest).modality))
    strategy = build_strategy(ac)
    tags = run_tags(ctx, site, manifest, role="target", strategy=f"classify-{strategy.name}",
                    task_kind="classification", network=c.network)
    with ctx.tracker.run(f"classify-{site}", tags=tags) as parent:
        log_setup(ctx, parent, site, manifest, {"classify.strategy": strategy.name, "n_labelled": len(labelled)})
        job = _Job(ctx, site, manifest, source, source_manifest, classes, in_channels, parent, test)
        source_model, source_auc, (src_m, src_s) = _train_source(job, source_items, source_test, test)
        metrics: dict[str, ClassMetrics | None] = {m: None for m in MODELS}
        checks: dict[str, Shortcut] = {"source_only": src_s}
        metrics["source_only"] = src_m
        found = _adabn(job, source_model, images, source_items)
        if found:
            metrics["source_adabn"], checks["source_adabn"] = found
        notes, forgetting, negative = [], None, ""
        if labelled:
            metrics["from_scratch"], checks["from_scratch"] = _scratch(job, labelled)
            metrics["adapted"], checks["adapted"], forgetting = _adapt(job, strategy, source_model, labelled,
                                                                       source_items, source_test, source_auc)
            negative = _negative_transfer(metrics, c.negative_transfer_margin)
            ctx.tracker.set_tags(parent, {"negative_transfer": "true" if negative else "false",
                                          **({"negative_transfer_reason": negative} if negative else {})})
        else:
            notes.append("no labelled target cases: only the source-only and AdaBN rows")
        summary = {m: (v.summary() if v is not None else None) for m, v in metrics.items()}
        ctx.tracker.log_json(parent, {"classes": list(classes), "metrics": summary,
                                      "shortcut": {m: s.summary() for m, s in checks.items()}},
                             "classification/summary.json")
    return ClassifyResult(site, source, c.network, strategy.name, classes, len(labelled), len(test), parent, summary,
                          {m: s.summary() for m, s in checks.items()}, source_auc, forgetting, negative, notes)


def _negative_transfer(metrics: dict[str, ClassMetrics | None], margin: float) -> str:
    """'' or why the adapted classifier counts as negative transfer (AUC below a baseline)."""
    adapted = metrics["adapted"].auc if metrics["adapted"] else None
    if adapted is None:
        return ""
    worse = [f"{name.replace('_', '-')} {m.auc:.3f}" for name in ("source_only", "from_scratch")
             if (m := metrics[name]) is not None and m.auc is not None and adapted < m.auc - margin]
    return f"adapted AUC {adapted:.3f} below {' and '.join(worse)} by more than {margin}" if worse else ""
