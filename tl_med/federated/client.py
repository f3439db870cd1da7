"""The NVFlare client script of a site (run by NVFlare's ScriptRunner, one per site).

It reads only its own site's de-identified manifest and preprocessed cache, and in every round
receives the global weights, trains on its own data (:func:`tl_med.federated.local.local_round`)
and sends back, through the Client API, its weights plus a few numbers (train loss, validation
Dice, number of training cases and steps). Nothing else leaves the site; the server records the
numbers per round and site (``metrics/round_metrics.jsonl``).

Arguments (set per site by :func:`tl_med.federated.job.build_recipe`): ``--manifest`` (the site's
manifest), ``--cache`` (its preprocessing cache), ``--config`` (the pipeline and federated
settings as JSON).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["main"]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", required=True, type=Path)
    parser.add_argument("--cache", required=True, type=Path)
    parser.add_argument("--config", required=True, type=Path)
    return parser.parse_args(argv)


def _site_splits(manifest: Path) -> dict[str, list[dict]]:
    from tl_med.manifests import datalist

    return {s: datalist(manifest, s) for s in ("training", "validation")}


def main(argv: list[str] | None = None) -> None:
    import nvflare.client as flare
    import torch

    from tl_med.config import PipelineConfig
    from tl_med.federated.config import FederatedConfig
    from tl_med.federated.local import local_round
    from tl_med.models.zoo import build_network

    args = _arguments(argv)
    settings = json.loads(args.config.read_text())
    cfg = PipelineConfig.model_validate(settings["pipeline"])
    fed = FederatedConfig.model_validate(settings["federated"])
    splits = _site_splits(args.manifest)
    torch.set_num_threads(max(1, torch.get_num_threads() // int(settings.get("concurrent_sites", 1))))
    model = build_network(cfg.network)
    flare.init()
    while flare.is_running():
        incoming = flare.receive()
        if incoming is None:
            break
        model.load_state_dict({k: torch.as_tensor(v) for k, v in incoming.params.items()})
        mu = float((incoming.meta or {}).get("fedprox_mu") or 0.0)
        step = int(incoming.current_round or 0)
        result = local_round(model, splits, cfg, fed, args.cache, mu=mu, seed=cfg.seed + step)
        flare.send(flare.FLModel(params=result.state, metrics={**result.metrics(), "fedprox_mu": mu},
                                 meta={"NUM_STEPS_CURRENT_ROUND": result.n_steps}))


if __name__ == "__main__":
    main()
