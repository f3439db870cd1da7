"""How much of the domain gap can be closed without a single target label?

For each target site and each source model (``--pretrain-augment``: one per training augmentation,
e.g. ``intensity,contrast``), every zero-label recipe in ``--recipes`` (``none`` = the source model
as it is; otherwise comma-free ``+``-joined steps of ``tl_med.catalogue.STEPS``, e.g.
``mean_teacher+self_training``, optionally ``@<augmentation>`` for the augmentation of the patches
it trains on, e.g. ``mean_teacher@contrast``) adapts the source model with no target label for
``--recipe-epochs``, × ``--seeds``.
The **oracle** is a network trained from scratch on every labelled target training case (one per
seed). Each model is evaluated on the site's untouched test split the way the pipeline reports
it: whole-image inference, Dice on each image's own grid. Beside the Dice, the label-free quality
estimate (``tl_med.quality``) of every model.

Prints, per site and recipe, mean ± sd test Dice and the share of the source-only → oracle gap it
recovers (``(recipe - source-only of the first source) / (oracle - that source-only)``, the first
source being the first of ``--pretrain-augment``, so that a better source model counts as recovery;
with ``--source``, the given model: the share of the gap *it leaves* that a recipe closes), and the
median over sites. Writes a CSV and
``summary.json`` into a folder of its own (``<workspace>/zero-label/<timestamp>/``) and logs them to
MLflow (experiment ``tlmed-benchmarks``). Data, grid and training
settings, and ``--sites-file`` for your own sites, are those of ``label_efficiency.py`` (``common.py``).

Usage::

    python benchmarks/zero_label.py                            # ~25 min on 2 CPU cores
    python benchmarks/zero_label.py --sites east --seeds 1     # a quick look
    python benchmarks/zero_label.py --recipes none,self_training,mean_teacher,adabn,harmonise
    python benchmarks/zero_label.py --pretrain-augment intensity --recipes none,mean_teacher@contrast
    python benchmarks/zero_label.py --sites-file /data/sites.yaml --workspace /data/tlmed-zero   # your sites
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (the same data, grid and training settings as label_efficiency.py)


def _args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_options(ap, sites="east,west,south", pretrain_epochs=300)
    ap.add_argument("--recipes", default="none,self_training,mean_teacher,mean_teacher+self_training")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--recipe-epochs", type=int, help="epochs of each recipe (default: --epochs, as the oracle)")
    ap.add_argument("--pretrain-augment", default="intensity,contrast")
    return ap.parse_args()


def _parse_recipe(recipe: str) -> tuple[tuple[str, ...], str | None]:
    """``steps[@augmentation]`` → (steps, augmentation or None); ``none`` is the source model as it is."""
    body, _, augment = recipe.partition("@")
    return (() if body in ("none", "") else tuple(body.split("+"))), (augment or None)


def _mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}" if values else "n/a"


def main() -> None:
    from tl_med.quiet import silence_known_noise

    silence_known_noise()
    args = _args()

    from tl_med.catalogue import AUGMENTATIONS, STEPS
    from tl_med.data.loaders import loader_factory
    from tl_med.manifests import datalist
    from tl_med.models.zoo import resolve_device
    from tl_med.tracking import Tracker
    from tl_med.workspace import Workspace

    recipes = [r for r in args.recipes.split(",") if r]
    variants = [v for v in args.pretrain_augment.split(",") if v]
    parsed = {r: _parse_recipe(r) for r in recipes}
    unknown = sorted({s for steps, _ in parsed.values() for s in steps} - set(STEPS))
    if unknown:
        sys.exit(f"error: unknown step(s) in --recipes: {', '.join(unknown)} (known: {', '.join(STEPS)})")
    if bad := sorted(({a for _, a in parsed.values() if a} | set(variants)) - set(AUGMENTATIONS)):
        sys.exit(f"error: unknown augmentation(s) in --recipes or --pretrain-augment: {', '.join(bad)} (known: {', '.join(AUGMENTATIONS)})")
    start = time.perf_counter()
    root = args.workspace or Path(tempfile.mkdtemp(prefix="tlmed-zero-"))
    ws = Workspace(root.resolve()).ensure()
    cfg = common.config(args)
    device = resolve_device(cfg.device)
    sites = common.prepare(args, cfg, ws)
    manifests = sites.manifests
    tracker = Tracker(ws.tracking_uri, "tlmed-benchmarks", ws.mlflow_artifacts)
    states = common.sources(args, ws, tracker, sites, variants, start)
    variants = list(states)  # --source: the one given model
    make = loader_factory(ws.cache, cfg.preprocess, seed=cfg.seed)
    epochs = args.recipe_epochs or cfg.adapt.epochs

    def recipe_setup(augment: str | None, seed: int):
        """The config and loaders of one recipe: its epochs, its augmentation when it names one, and
        patch sampling drawn by the run's seed (a step that trains nothing else, such as TENT, would
        otherwise repeat one draw under every seed)."""
        kind = augment or cfg.adapt.augment
        rcfg = cfg.model_copy(update={"adapt": cfg.adapt.model_copy(update={"epochs": epochs, "augment": kind})})
        return rcfg, loader_factory(ws.cache, cfg.preprocess, seed=cfg.seed + seed, augment=kind)

    rows: list[dict] = []
    summary: dict[str, dict] = {}
    for site in sites.targets:
        training = datalist(manifests[site], "training")
        data = {**common.site_data(sites, site),
                "unlabelled": datalist(manifests[site], "unlabelled") +
                [{k: v for k, v in it.items() if k != "label"} for it in training]}

        def record(method: str, variant: str, seed: int, dice: float, estimated: float, val_dice: float,
                   t0: float) -> None:
            rows.append({"site": site, "source": variant, "recipe": method, "seed": seed, "dice": dice,
                         "estimated": estimated, "val_dice": val_dice, "seconds": round(time.perf_counter() - t0, 1)})
            print(f"  {site:<7} {variant:<10} {method:<28} seed={seed} Dice {dice:.3f} (estimated {estimated:.3f}; "
                  f"total {time.perf_counter() - start:.0f} s)", flush=True)

        for seed in range(args.seeds):
            t0 = time.perf_counter()
            k_items = (training * 2)[:max(args.epoch_cases, len(training))]
            record("oracle (scratch, all labels)", "-", seed,
                   *common.run_method(cfg, make, "scratch", k_items, data, None, seed, device, ()), t0)
            for variant in variants:
                for recipe in recipes:
                    if recipe == "none" and seed > 0:
                        continue  # deterministic
                    t0 = time.perf_counter()
                    steps, augment = parsed[recipe]
                    method = "da" if steps or augment else "source_only"
                    rcfg, rmake = recipe_setup(augment, seed)
                    record(recipe, variant, seed, *common.run_method(rcfg, rmake, method, [], data, states[variant],
                                                                     seed, device, steps), t0)
        summary[site] = _summarise(site, [r for r in rows if r["site"] == site], variants[0])
    summary["median_recovery"] = _median_recovery(summary)
    summary["estimate_vs_dice"] = _correlation(rows)
    out_dir = ws.root / "zero-label" / time.strftime("%Y%m%d-%H%M%S")  # each run its own folder
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "zero_label.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    with tracker.run("zero-label", tags={"benchmark": "zero_label", "code_version": common.code()}) as run_id:
        tracker.log_params(run_id, {**vars(args), "workspace": str(ws.root)})
        for path in out_dir.iterdir():
            tracker.client.log_artifact(run_id, str(path), "zero_label")
    print(f"\nfinished in {(time.perf_counter() - start) / 60:.1f} min; CSV and summary: {out_dir}")


def _summarise(site: str, rows: list[dict], baseline_source: str) -> dict:
    oracle = statistics.mean(r["dice"] for r in rows if r["recipe"].startswith("oracle"))
    base = next(r["dice"] for r in rows if r["recipe"] == "none" and r["source"] == baseline_source)
    print(f"\n{site}: oracle {_mean_sd([r['dice'] for r in rows if r['recipe'].startswith('oracle')])}; "
          f"source-only ({baseline_source} source) {base:.3f}; gap {oracle - base:.3f}")
    out: dict = {"oracle_dice": oracle, "source_only_dice": base}
    for source in dict.fromkeys(r["source"] for r in rows if r["source"] != "-"):
        for recipe in dict.fromkeys(r["recipe"] for r in rows if r["source"] == source):
            dice = [r["dice"] for r in rows if r["source"] == source and r["recipe"] == recipe]
            recovery = (statistics.mean(dice) - base) / (oracle - base) if oracle != base else float("nan")
            out[f"{source}/{recipe}"] = {"dice": statistics.mean(dice), "sd": statistics.pstdev(dice),
                                         "recovery": recovery}
            print(f"  {source:<10} {recipe:<28} Dice {_mean_sd(dice)}  recovers {recovery:6.0%} of the gap")
    return out


def _correlation(rows: list[dict]) -> dict[str, float]:
    """Spearman rank correlation of the label-free estimate with the true Dice, per site and pooled."""
    from scipy.stats import spearmanr

    out = {}
    for site in [*dict.fromkeys(r["site"] for r in rows), "all"]:
        pick = [r for r in rows if site in ("all", r["site"])]
        if len(pick) >= 3 and len({r["dice"] for r in pick}) > 1 and len({r["estimated"] for r in pick}) > 1:
            out[site] = float(spearmanr([r["estimated"] for r in pick], [r["dice"] for r in pick]).statistic)
    print("label-free estimate vs true Dice (Spearman): " + ", ".join(f"{k} {v:.2f}" for k, v in out.items()))
    return out


def _median_recovery(summary: dict) -> dict[str, float]:
    keys = {k for s in summary.values() for k in s if "/" in k}
    out = {k: statistics.median(s[k]["recovery"] for s in summary.values() if k in s) for k in sorted(keys)}
    print("\nmedian recovery over sites: " + ", ".join(f"{k} {v:.0%}" for k, v in out.items()))
    return out


if __name__ == "__main__":
    main()
