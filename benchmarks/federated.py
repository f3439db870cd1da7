"""Federated vs source-only vs pooled pretraining: test Dice of each pretrained model on every
site's test split before adaptation, then on each target site after adaptation beside the
from-scratch baseline, with wall time and the weights sent per round.

- source-only: trained on the source site alone (what the pipeline does without federation);
- federated: NVFlare FedAvg/FedProx across all sites (``tl_med.federated``), images stay put;
- pooled: one model on all sites' training cases in one place (the upper bound that needs the
  images moved).

Each trains ``rounds × local_epochs`` epochs. Data: the synthetic sites of ``--profile`` (``tiny``:
two 8 mm sites, seconds per run; ``demo``: the demo's three sites and registry), generated and
ingested like the pipeline does. After adaptation (``--adapt``, default on): each target site
adapted from each pretrained model with the profile's adaptation settings (its labelled training
split), exactly as ``tl-med adapt`` does; ``scratch`` is that run's from-scratch baseline.
Results of every seed are appended to ``<workspace>/federated-bench.json`` as they finish.

    .venv/bin/python benchmarks/federated.py --profile demo --seeds 0,1,2 --rounds 25 --local-epochs 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


KINDS = ("source-only", "federated", "pooled")


def _workspace(root: Path, profile: str):
    """The profile's synthetic sites, generated and ingested into a workspace under ``root``."""
    from tl_med.data.synthetic import DEMO_SITES, TINY_SITES, generate_sites
    from tl_med.ingest.site import ingest_site
    from tl_med.sites import load_sites
    from tl_med.workspace import Workspace

    ws = Workspace(root / "ws").ensure()
    tiny = profile == "tiny"
    if not (ws.incoming / ".generated").exists():
        generate_sites(ws.incoming, TINY_SITES if tiny else DEMO_SITES, seed=0, downsample=4 if tiny else 1)
        (ws.incoming / ".generated").touch()
    sites = load_sites(ROOT / "data_manifests" / ("sites-tiny.yaml" if tiny else "sites.yaml"), ws.root)
    for site in sites.sites:
        if site.inbox is not None:
            site.inbox.mkdir(parents=True, exist_ok=True)
        ingest_site(site, ws, **sites.task_fields())
    return ws, sites


def _pooled(ws, names: list[str]) -> Path:
    """One manifest holding every site's cases (same folder, so the relative paths still hold)."""
    from tl_med.manifests import load_manifest, write_manifest

    parts = [load_manifest(ws.site_manifest(n)) for n in names]
    split = {s: tuple(c for p in parts for c in getattr(p, s)) for s in ("training", "validation", "test")}
    pooled = parts[0].model_copy(update={"name": "pooled", **split, "numTraining": len(split["training"]),
                                         "numTest": len(split["test"])})
    return write_manifest(pooled, ws.site_manifest("pooled"))


def _site_dice(ctx, weights_uri: str, names: list[str]) -> dict[str, float]:
    from tl_med.inference import Predictor, evaluate_native
    from tl_med.manifests import datalist
    from tl_med.models.zoo import build_network, resolve_device
    from tl_med.stages.common import model_spec

    model = build_network(ctx.cfg.network)
    model.load_state_dict(ctx.tracker.load_state_dict(weights_uri))
    spec = model_spec(ctx, "benchmark", ctx.ws.site_manifest(names[0]))
    predictor = Predictor(model, spec, resolve_device(ctx.cfg.device))
    return {n: evaluate_native(predictor, datalist(ctx.ws.site_manifest(n), "test"))[0].summary()["dice"]
            for n in names}


def _seed(args, ws, sites, pooled: Path, fed, seed: int) -> dict:
    """One seed: the three pretrained models, each scored on every site, then adapted to each target."""
    from tl_med.config import PipelineConfig
    from tl_med.federated import federated_pretrain
    from tl_med.stages import StageContext, adapt_site, pretrain_source
    from tl_med.tracking import Tracker

    names = [s.name for s in sites.sites]
    base = PipelineConfig.profile(args.profile, seed=seed).with_task(sites.task)
    cfg = base.model_copy(update={"pretrain": base.pretrain.model_copy(
        update={"epochs": args.rounds * args.local_epochs})})
    ctx = StageContext(ws=ws, cfg=cfg, tracker=Tracker(ws.tracking_uri, f"bench-federated-{seed}", ws.mlflow_artifacts),
                       trigger="benchmark")
    source = ws.site_manifest(sites.source.name)
    out: dict = {"seed": seed, "models": {}}
    for kind in args.kinds:
        start = time.perf_counter()
        if kind == "federated":
            result = federated_pretrain(ctx, {n: ws.site_manifest(n) for n in names}, fed)
            out["bytes_per_round"] = result.bytes_per_round
        else:
            site, manifest = (sites.source.name, source) if kind == "source-only" else ("pooled", pooled)
            result = pretrain_source(ctx, site, manifest)
        row = {"seconds": time.perf_counter() - start, "before": _site_dice(ctx, result.weights_uri, names),
               "after": {}, "scratch": {}}
        for site in sites.targets if args.adapt else []:
            adapted = adapt_site(ctx, site.name, ws.site_manifest(site.name), result.weights_uri,
                                 source_manifest=source)
            row["after"][site.name], row["scratch"][site.name] = adapted.adapted_dice, adapted.scratch_dice
        out["models"][kind] = row
    return out


def _stat(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f}±{sd:.3f}"


def _report(runs: list[dict], names: list[str], targets: list[str], args) -> None:
    seeds = ",".join(str(r["seed"]) for r in runs)
    sent = runs[0].get("bytes_per_round", 0) / 1e6
    print(f"test Dice before adaptation, mean±sd over seeds {seeds} ({args.rounds} rounds × {args.local_epochs} "
          f"epochs; {args.algorithm}, privacy {args.privacy}; {sent:.2f} MB of weights per federated round)")
    print(f"{'model':<12}" + "".join(f"{n:>14}" for n in names) + f"{'wall s':>10}")
    for kind in args.kinds:
        print(f"{kind:<12}" + "".join(f"{_stat([r['models'][kind]['before'][n] for r in runs]):>14}" for n in names)
              + f"{statistics.mean(r['models'][kind]['seconds'] for r in runs):>10.1f}")
    if not targets:
        return
    print("\ntest Dice after adapting each target site (the profile's adaptation; scratch: its from-scratch baseline)")
    print(f"{'site':<8}{'scratch':>14}" + "".join(f"{'from ' + k:>19}" for k in args.kinds))
    for site in targets:
        scratch = [r["models"][args.kinds[0]]["scratch"][site] for r in runs]
        print(f"{site:<8}{_stat(scratch):>14}" +
              "".join(f"{_stat([r['models'][k]['after'][site] for r in runs]):>19}" for k in args.kinds))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, help="keep data and MLflow here (default: a temp dir)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--algorithm", choices=["fedavg", "fedprox"], default="fedavg")
    ap.add_argument("--mu", type=float, default=0.0)
    ap.add_argument("--privacy", choices=["none", "percentile"], default="none",
                    help="the federated row's privacy filter (FederatedConfig.privacy)")
    ap.add_argument("--profile", choices=["tiny", "demo"], default="tiny")
    ap.add_argument("--adapt", action=argparse.BooleanOptionalAction, default=True,
                    help="also adapt each target site from each pretrained model (default: on)")
    ap.add_argument("--kinds", default=",".join(KINDS),
                    help=f"which pretrained models to compare (of {', '.join(KINDS)})")
    args = ap.parse_args(argv)
    from tl_med.quiet import silence_known_noise

    silence_known_noise()  # MONAI's and MLflow's routine lines would fill the table's stdout
    args.kinds = [k for k in args.kinds.split(",") if k]
    if not args.kinds or set(args.kinds) - set(KINDS):
        ap.error(f"--kinds: choose from {', '.join(KINDS)}")

    from tl_med.federated import FederatedConfig

    root = args.workspace or Path(tempfile.mkdtemp(prefix="tlmed-federated-bench-"))
    ws, sites = _workspace(root, args.profile)
    names = [s.name for s in sites.sites]
    pooled = _pooled(ws, names)
    fed = FederatedConfig(rounds=args.rounds, local_epochs=args.local_epochs, algorithm=args.algorithm, mu=args.mu,
                          privacy=args.privacy)
    runs, log = [], root / "federated-bench.json"
    for seed in [int(s) for s in args.seeds.split(",")]:
        runs.append(_seed(args, ws, sites, pooled, fed, seed))
        log.write_text(json.dumps(runs, indent=1))
        print(f"seed {seed} done ({log})", file=sys.stderr, flush=True)
    _report(runs, names, [s.name for s in sites.targets] if args.adapt else [], args)


if __name__ == "__main__":
    main()
