"""Federated vs source-only vs pooled pretraining: test Dice of each pretrained model on every
site's test split (before any adaptation), with wall time and the weights sent per round.

- source-only: trained on the source site alone (what the pipeline does without federation);
- federated: NVFlare FedAvg/FedProx across all sites (``tl_med.federated``), images stay put;
- pooled: one model on all sites' training cases in one place (the upper bound that needs the
  images moved).

Each trains ``rounds × local_epochs`` epochs. Data: the synthetic tiny sites (``--downsample 4``,
seconds per run) or the demo's (``--downsample 1``), ingested like the pipeline does.

    .venv/bin/python benchmarks/federated.py --seeds 0,1 --rounds 2 [--algorithm fedprox --mu 0.01]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _workspace(root: Path, downsample: int):
    from tests.conftest import make_workspace
    from tl_med.data.synthetic import TINY_SITES, generate_sites
    from tl_med.ingest.site import ingest_site
    from tl_med.sites import load_sites

    incoming = root / "incoming"
    if not incoming.exists():
        generate_sites(incoming, TINY_SITES, seed=0, downsample=downsample)
    ws, sites_file = make_workspace(root / "ws", incoming)
    sites = load_sites(sites_file, ws.root)
    for site in sites.sites:
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, help="keep data and MLflow here (default: a temp dir)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--algorithm", choices=["fedavg", "fedprox"], default="fedavg")
    ap.add_argument("--mu", type=float, default=0.0)
    ap.add_argument("--downsample", type=int, default=4)
    ap.add_argument("--profile", default="tiny")
    args = ap.parse_args(argv)

    from tl_med.config import PipelineConfig
    from tl_med.federated import FederatedConfig, federated_pretrain
    from tl_med.stages import StageContext, pretrain_source
    from tl_med.tracking import Tracker

    root = args.workspace or Path(tempfile.mkdtemp(prefix="tlmed-federated-bench-"))
    ws, sites = _workspace(root, args.downsample)
    names = [s.name for s in sites.sites]
    pooled = _pooled(ws, names)
    fed = FederatedConfig(rounds=args.rounds, local_epochs=args.local_epochs, algorithm=args.algorithm, mu=args.mu)
    rows: dict[str, list[tuple[dict[str, float], float]]] = {"source-only": [], "federated": [], "pooled": []}
    sent = 0
    for seed in [int(s) for s in args.seeds.split(",")]:
        base = PipelineConfig.profile(args.profile, seed=seed).with_task(sites.task)
        cfg = base.model_copy(update={"pretrain": base.pretrain.model_copy(
            update={"epochs": args.rounds * args.local_epochs})})
        tracker = Tracker(ws.tracking_uri, f"bench-federated-{seed}", ws.mlflow_artifacts)
        ctx = StageContext(ws=ws, cfg=cfg, tracker=tracker, trigger="benchmark")
        for kind, site, manifest in (("source-only", sites.source.name, ws.site_manifest(sites.source.name)),
                                     ("pooled", "pooled", pooled)):
            start = time.perf_counter()
            result = pretrain_source(ctx, site, manifest)
            rows[kind].append((_site_dice(ctx, result.weights_uri, names), time.perf_counter() - start))
        start = time.perf_counter()
        result = federated_pretrain(ctx, {n: ws.site_manifest(n) for n in names}, fed)
        rows["federated"].append((_site_dice(ctx, result.weights_uri, names), time.perf_counter() - start))
        sent = result.bytes_per_round
    print(f"test Dice before adaptation, mean over seeds {args.seeds} ({args.rounds} rounds × "
          f"{args.local_epochs} epochs; {fed.algorithm}; {sent / 1e6:.2f} MB of weights per federated round)")
    print(f"{'model':<12}" + "".join(f"{n:>10}" for n in names) + f"{'wall s':>10}")
    for kind, runs in rows.items():
        dice = {n: statistics.mean(r[0][n] for r in runs) for n in names}
        print(f"{kind:<12}" + "".join(f"{dice[n]:>10.3f}" for n in names) +
              f"{statistics.mean(r[1] for r in runs):>10.1f}")


if __name__ == "__main__":
    main()
