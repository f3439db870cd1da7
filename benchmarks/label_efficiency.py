"""How many target labels does transfer save? Dice against the number of labelled target cases.

For each target site, k labelled target cases (k in ``--ks``, ``all`` = the whole training split)
× ``--seeds`` (the seed picks both the k cases and the initialisation) × methods:

* ``scratch``: a fresh network trained on the k cases only;
* ``finetune``, ``feature_extraction``, ``progressive``: the source model adapted with that strategy;
* ``da``: fine-tuning plus the domain-adaptation steps in ``--da-steps`` (default self-training;
  with k = 0 only the steps act);
* ``source_only`` (k = 0): the source model as it is.

``--pretrain-augment intensity,contrast`` trains one source model per augmentation (see
``tl_med.data.contrast``) and runs every source-dependent method from each, side by side (methods
are then named ``finetune/contrast`` and so on); from-scratch runs do not depend on it and run once.
With two or more sources (that, or several comma-separated ``--source`` models), each labelled run
also yields ``<method>/by-val``: the source whose run has the best validation Dice, as the pipeline
chooses with ``pretrain.alternate`` (README, "Two sources, chosen on validation").

The **oracle** is the from-scratch network trained on every labelled target training case
(``scratch`` at ``all``). Every run trains for the same number of optimizer steps (the k cases are
repeated to a fixed epoch length, sampled as random patches), is validated on the site's validation
split (not with k = 0), and is evaluated on the site's untouched test split the way the pipeline
reports it: whole-image sliding-window inference, Dice against the label on each image's own grid.

Sites: the synthetic ``east`` (low-dose CT, hypodense liver) and ``west`` (T2 MR, sagittal);
``south`` (T1 MR at 3 T, coronal, strong bias field): held out, nothing in tl_med was tuned on it;
and ``external``: another CT population converted by **dcm2niix** (not by tl_med) and defined only
by a decathlon-style datalist of NIfTI pairs, ingested through the datalist path. Or, with
``--sites-file``, your own sites: any ``sites.yaml`` with a source and targets (see ``common.py``).

Prints, per site, the labels each method needs to reach 95 % of the oracle's Dice and the ratio to
from-scratch, and how much of the source-only → oracle gap zero target labels recover. Writes a
CSV (with each run's validation Dice) and one plot per site into a folder of its own
(``<workspace>/label-efficiency/<timestamp>/``), and logs them to MLflow (experiment
``tlmed-benchmarks``).

Usage::

    python benchmarks/label_efficiency.py                   # defaults: ~30 min on 2 CPU cores
    python benchmarks/label_efficiency.py --sites east --seeds 1 --ks 0,2,all   # a quick look
    python benchmarks/label_efficiency.py --spacing 4 --patch 48 --epochs 20 --seeds 3   # larger settings
    python benchmarks/label_efficiency.py --sites east,west,south --ks 0,1,2,4,all --seeds 3 \
        --methods scratch,finetune,da --pretrain-augment intensity,contrast     # contrast augmentation
    python benchmarks/label_efficiency.py --sites-file /data/sites.yaml --ks 0,1,4,all --seeds 3 \
        --workspace /data/tlmed-benchmark                                        # your own sites
    python benchmarks/label_efficiency.py --workspace /data/tlmed-benchmark --source \
        models:/tlmed-liver-north@champion --ks 0,1,4,all    # a registered source, not pretrained again
    python benchmarks/label_efficiency.py --workspace /data/tlmed-benchmark --source \
        models:/tlmed-liver-north@challenger,models:/tlmed-liver-north@alternate --ks 1,4 --seeds 3 \
        --methods scratch,finetune                           # both sources, and the one validation picks
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (the benchmarks' shared data, settings and runs)
from tl_med.config import TrainConfig  # noqa: E402

METHODS = ("scratch", "finetune", "feature_extraction", "progressive", "da")


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_options(ap, sites="east,west,external", pretrain_epochs=100)
    ap.add_argument("--ks", default="0,1,2,5,10,20,all")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--da-steps", default="self_training",
                    help="steps of the 'da' method (self-training did best with zero labels in a short "
                         "exploration of harmonise, adabn, coral and their pairs at east)")
    ap.add_argument("--target", type=float, default=0.95, help="fraction of the oracle's Dice to reach")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    ap.add_argument("--pretrain-augment", default=TrainConfig.model_fields["augment"].default,
                    help="source model augmentation(s), comma-separated: none, intensity, contrast (default: the "
                         "pipeline's pretrain.augment, %(default)s)")
    return ap.parse_args()


def _atlas_dice(make, source_train: list[dict], test: list[dict]) -> float:
    """Dice of a fixed location prior: the source labels' mean mask (> 0.5), no image used. On the
    preprocessed grid (RAS, model spacing, centred in a common box): a shortcut diagnostic only."""
    import torch
    from monai.metrics import DiceMetric
    from monai.transforms import ResizeWithPadOrCrop

    source = [b["label"][0] for b in make(source_train, train=False)]
    tests = [b["label"][0] for b in make(test, train=False)]
    box = ResizeWithPadOrCrop(tuple(max(m.shape[k] for m in source + tests) for k in (1, 2, 3)))
    atlas = (torch.stack([box(m) for m in source]).float().mean(dim=0) > 0.5).float()
    metric = DiceMetric(include_background=True, reduction="mean")
    for label in tests:
        metric(atlas[None], (box(label) > 0).float()[None])
    return float(metric.aggregate())


def _chosen_by_validation(candidates: list[dict], method: str) -> dict:
    """The run a site would keep when it adapts from every source and picks the best validation
    Dice (its own labelled validation cases; the test split stays unseen): ``<method>/by-val``."""
    best = max(candidates, key=lambda r: r["val_dice"] if r["val_dice"] == r["val_dice"] else float("-inf"))
    row = {**best, "method": f"{method}/by-val", "seconds": round(sum(r["seconds"] for r in candidates), 1)}
    print(f"  {row['site']:<9} k={row['k']:<3} seed={row['seed']} {row['method']:<26} Dice {row['dice']:.3f} "
          f"(chose {best['method']} on validation {best['val_dice']:.3f})", flush=True)
    return row


def _labels_needed(curve: dict[int, float], goal: float) -> int | None:
    return next((k for k in sorted(curve) if curve[k] >= goal), None)


def _plot(site: str, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        ks = sorted({r["k"] for r in rows if r["method"] == method})
        means = [statistics.mean(r["dice"] for r in rows if r["method"] == method and r["k"] == k) for k in ks]
        sds = [statistics.pstdev([r["dice"] for r in rows if r["method"] == method and r["k"] == k]) for k in ks]
        ax.errorbar([k + 0.5 for k in ks], means, yerr=sds, marker="s" if len(ks) == 1 else "o",
                    capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("labelled target cases (k + 0.5, log scale)")
    ax.set_ylabel("test Dice")
    ax.set_title(f"Label efficiency at site {site}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    from tl_med.quiet import silence_known_noise

    silence_known_noise()
    args = _args()
    import torch

    from tl_med.catalogue import AUGMENTATIONS
    from tl_med.data.loaders import loader_factory
    from tl_med.manifests import datalist
    from tl_med.models.zoo import resolve_device
    from tl_med.tracking import Tracker
    from tl_med.workspace import Workspace

    methods = tuple(m for m in args.methods.split(",") if m)
    variants = [v for v in args.pretrain_augment.split(",") if v]
    if unknown := sorted(set(methods) - set(METHODS)) or sorted(set(variants) - set(AUGMENTATIONS)):
        sys.exit(f"error: unknown method or augmentation: {', '.join(unknown)}")

    def label(method: str, variant: str) -> str:
        return method if method == "scratch" or len(variants) == 1 else f"{method}/{variant}"

    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.perf_counter()
    root = args.workspace or Path(tempfile.mkdtemp(prefix="tlmed-labels-"))
    ws = Workspace(root.resolve()).ensure()
    cfg = common.config(args)
    device = resolve_device(cfg.device)
    sites = common.prepare(args, cfg, ws)
    manifests = sites.manifests
    print(f"data ready in {time.perf_counter() - start:.0f} s: " +
          ", ".join(f"{s} ({len(datalist(m, 'training'))} train / {len(datalist(m, 'test'))} test)"
                    for s, m in manifests.items()))
    tracker = Tracker(ws.tracking_uri, "tlmed-benchmarks", ws.mlflow_artifacts)
    states = common.sources(args, ws, tracker, sites, variants, start)
    variants = list(states)  # --source: the one given model
    make = loader_factory(ws.cache, cfg.preprocess, seed=cfg.seed)
    da_steps = tuple(s for s in args.da_steps.split(",") if s)
    rows: list[dict] = []
    out_dir = ws.root / "label-efficiency" / time.strftime("%Y%m%d-%H%M%S")  # each run its own folder
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict] = {}
    for site in sites.targets:
        training = datalist(manifests[site], "training")
        labelled_ids = {it["case_id"] for it in training}
        data = common.site_data(sites, site)
        ks = sorted({len(training) if k == "all" else min(int(k), len(training)) for k in args.ks.split(",")})
        atlas = _atlas_dice(make, data["source_train"], data["test"])
        rows.append({"site": site, "method": "location_prior", "k": 0, "seed": 0, "dice": atlas,
                     "estimated": float("nan"), "val_dice": float("nan"), "seconds": 0})
        print(f"  {site:<9} location prior (source mean mask, no image): Dice {atlas:.3f}")
        for seed in range(args.seeds):
            order = torch.randperm(len(training), generator=torch.Generator().manual_seed(seed)).tolist()
            for k in ks:
                chosen = [training[i] for i in order[:k]]
                repeats = math.ceil(args.epoch_cases / k) if k else 0
                k_items = (chosen * repeats)[:max(args.epoch_cases, k)]  # same steps for every k
                hidden = [{kk: v for kk, v in training[i].items() if kk != "label"} for i in order[k:]]
                data["unlabelled"] = datalist(manifests[site], "unlabelled") + hidden
                assert not {it["case_id"] for it in data["test"]} & labelled_ids
                if k == 0:  # deterministic: one source-only evaluation is enough
                    todo = ("source_only",) * (seed == 0) + ("da",) * ("da" in methods)
                else:
                    todo = methods
                for method in todo:
                    for variant in (variants[:1] if method == "scratch" else variants):
                        t0 = time.perf_counter()
                        dice, estimated, val = common.run_method(cfg, make, method, k_items, data, states[variant],
                                                                 seed, device, da_steps)
                        rows.append({"site": site, "method": label(method, variant), "k": k, "seed": seed,
                                     "dice": dice, "estimated": estimated, "val_dice": val,
                                     "seconds": round(time.perf_counter() - t0, 1)})
                        print(f"  {site:<9} k={k:<3} seed={seed} {rows[-1]['method']:<26} Dice {dice:.3f} "
                              f"(validation {val:.3f}, estimated without labels {estimated:.3f}) "
                              f"({rows[-1]['seconds']:.0f} s, total {time.perf_counter() - start:.0f} s)", flush=True)
                    if k and len(variants) > 1 and method != "scratch":
                        rows.append(_chosen_by_validation(rows[-len(variants):], method))
        site_rows = [r for r in rows if r["site"] == site]
        _plot(site, site_rows, out_dir / f"{site}.png")
        summary[site] = _summarise(site, site_rows, len(training), args.target, da_steps,
                                   {v: label("source_only", v) for v in variants},
                                   {v: label("da", v) for v in variants})
    summary["estimate_vs_dice"] = _estimate_correlation(rows, summary)
    csv_path = out_dir / "label_efficiency.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    with tracker.run("label-efficiency", tags={"benchmark": "label_efficiency", "code_version": common.code()}) as run_id:
        tracker.log_params(run_id, {**vars(args), "workspace": str(ws.root)})
        for path in out_dir.iterdir():
            tracker.client.log_artifact(run_id, str(path), "label_efficiency")
        for site, s in summary.items():
            tracker.log_metrics(run_id, {f"{site}.{k}".replace("/", "_"): v for k, v in s.items()
                                         if isinstance(v, (int, float)) and v == v})
    print(f"\nfinished in {(time.perf_counter() - start) / 60:.1f} min; CSV, plots, summary: {out_dir} "
          f"(and MLflow run 'label-efficiency' in {ws.tracking_uri})")


def _estimate_correlation(rows: list[dict], summary: dict) -> dict[str, float]:
    """Spearman rank correlation between the label-free estimate and the true Dice, over every
    model the benchmark evaluated (per site and pooled)."""
    from scipy.stats import spearmanr

    out = {}
    scored = [r for r in rows if r["estimated"] == r["estimated"]]
    for site in [*summary, "all"]:
        pick = [r for r in scored if site == "all" or r["site"] == site]
        if len(pick) >= 3 and len({r["dice"] for r in pick}) > 1 and len({r["estimated"] for r in pick}) > 1:
            out[site] = float(spearmanr([r["estimated"] for r in pick], [r["dice"] for r in pick]).statistic)
    print("\nlabel-free quality estimate vs true test Dice (Spearman, over every evaluated model): " +
          ", ".join(f"{site} {rho:.2f}" for site, rho in out.items()))
    return out


def _summarise(site: str, rows: list[dict], n_all: int, target: float, da_steps: tuple[str, ...],
               source_only: dict[str, str], da: dict[str, str]) -> dict:
    """Per site: the mean curve of each method, labels to reach ``target`` × oracle, the gain of
    each transfer method over from-scratch at each k, and the zero-label recovery of each source."""
    def curve(method: str) -> dict[int, float]:
        ks = sorted({r["k"] for r in rows if r["method"] == method})
        return {k: statistics.mean(r["dice"] for r in rows if r["method"] == method and r["k"] == k) for k in ks}

    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m not in ("location_prior",)]
    trained = [m for m in methods if m not in source_only.values()]
    oracle = curve("scratch").get(n_all, float("nan"))
    prior = curve("location_prior").get(0, float("nan"))
    goal = target * oracle
    out: dict = {"oracle_dice": oracle, "location_prior_dice": prior}
    print(f"\n{site}: oracle (from scratch, all {n_all} labels) Dice {oracle:.3f}; location prior {prior:.3f}; "
          f"goal {target:.0%} of oracle = {goal:.3f}")
    ks = sorted({r["k"] for r in rows if r["method"] in methods})
    width = max(len(m) for m in methods) + 2
    print(f"  {'mean test Dice by k:':<{width}}" + "".join(f"{k:>7}" for k in ks))
    for method in methods:
        c = curve(method)
        print(f"  {method:<{width}}" + "".join(f"{c[k]:>7.3f}" if k in c else f"{'':>7}" for k in ks))
    scratch = curve("scratch")
    scratch_needed = _labels_needed(scratch, goal)
    for method in trained:
        c = curve(method)
        needed = _labels_needed(c, goal)
        if needed is None:
            text = f"not reached with {max(c)} labels"
        elif scratch_needed is None or method == "scratch":
            text = f"{needed} labels" + ("" if method == "scratch" else
                                         f"; from scratch never reaches it: saves more than {n_all / max(needed, 1):.0f}x")
        else:
            text = f"{needed} labels; {scratch_needed / max(needed, 1):.1f}x fewer than from scratch ({scratch_needed})"
        gains = {k: c[k] - scratch[k] for k in sorted(c) if k in scratch and 0 < k < n_all}
        if method != "scratch" and gains:
            text += "; vs scratch " + ", ".join(f"k={k} {g:+.3f}" for k, g in gains.items())
            out.update({f"gain_over_scratch_{method}_k{k}": g for k, g in gains.items()})
        print(f"  {method:<{width}}{text}")
        out[f"labels_to_goal_{method}"] = float("nan") if needed is None else float(needed)
    for variant, so_name in source_only.items():
        so = curve(so_name).get(0, float("nan"))
        out[f"{so_name}_dice"] = so
        da0 = curve(da[variant]).get(0)
        if da0 is not None and oracle == oracle and oracle != so:
            recovery = (da0 - so) / (oracle - so)
            out[f"zero_label_recovery_{variant}"] = recovery
            print(f"  zero target labels, {variant} source: source-only {so:.3f}; da ({','.join(da_steps)}) "
                  f"{da0:.3f}: recovers {recovery:.0%} of the source-only → oracle gap "
                  f"({(so - curve(source_only[next(iter(source_only))]).get(0, so)):+.3f} from the augmentation)")
    return out


if __name__ == "__main__":
    main()
