"""What Prefect's per-case fan-out costs and saves, beside the plain library loop.

On one synthetic site (the demo's ``east`` scanner, full resolution, DICOM ingested once), times
the deterministic MONAI preprocessing of every case into a fresh disk cache:

- ``library``: ``tl_med.stages.warm_cache``, a plain loop in this process (the peer);
- ``prefect``: the ``preprocess-sites`` subflow mapping ``preprocess-case`` (thread runner), cold;
- ``prefect, repeated``: the same call again: every task is ``Cached`` by content hash;
- ``dask``: the subflow on a ``LocalCluster`` of ``--dask-workers`` processes, cold.

Then the incremental ingest of a retrain: the same site re-ingested unchanged, and after one new
study arrived (Prefect-mapped ``ingest`` vs the library's ``ingest_site``).

Usage::

    python benchmarks/orchestration.py                 # 24 studies of east, demo grid 48³
    python benchmarks/orchestration.py --studies 48 --dask-workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    from tl_med.quiet import silence_known_noise

    silence_known_noise()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=24)
    parser.add_argument("--dask-workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from tl_med.workspace import Workspace

    root = Path(tempfile.mkdtemp(prefix="tlmed-orch-"))
    Workspace(root / "ws").activate()  # PREFECT_HOME etc. before Prefect is imported

    from prefect import flow

    from flows.preprocess import dask_runner, preprocess_sites
    from flows.tasks import ingest
    from tl_med.config import PipelineConfig
    from tl_med.data.scanners import PROFILES
    from tl_med.data.synthetic import generate_study
    from tl_med.ingest.site import ingest_site
    from tl_med.sites import load_sites
    from tl_med.stages import warm_cache

    ws = Workspace(root / "ws").ensure()
    for i in range(args.studies):
        generate_study("east", PROFILES["east"], i, 0, ws.incoming)
    sites_file = root / "sites.yaml"
    sites_file.write_text("task: liver\nsites:\n  - {name: north, role: source, dicom_dir: incoming/east/dicom,"
                          " labels_dir: incoming/east/labels}\n  - {name: east, role: target, dicom_dir: "
                          "incoming/east/dicom, labels_dir: incoming/east/labels}\n")
    sites = load_sites(sites_file, ws.root)
    t_ingest, result = _timed(lambda: ingest_site(sites.get("east"), ws, task="liver"))
    manifest = str(result.manifest_path)
    cfg = PipelineConfig.profile("demo")
    config = cfg.model_dump(mode="json")
    n_cases = result.n_labelled + result.n_unlabelled
    print(f"site: {args.studies} studies of east ({n_cases} cases), first ingest {t_ingest:.2f} s")

    def fresh_cache() -> None:
        shutil.rmtree(ws.cache, ignore_errors=True)

    @flow(name="bench-warm-up")
    def warm_up() -> None:  # starts the temporary Prefect server, so no mode below pays for it
        return None

    t_start, _ = _timed(warm_up)
    print(f"temporary Prefect server start + first flow: {t_start:.2f} s (not counted below)")
    on_dask = preprocess_sites.with_options(task_runner=dask_runner(n_workers=args.dask_workers))
    modes = {
        "library loop (peer)": (True, lambda: warm_cache(ws, cfg, Path(manifest))),
        "prefect map, cold": (True, lambda: preprocess_sites(str(ws.root), config, [manifest])),
        "prefect map, repeated (cached)": (False, lambda: preprocess_sites(str(ws.root), config, [manifest])),
        f"dask LocalCluster x{args.dask_workers}, cold (incl. cluster start)":
            (True, lambda: on_dask(str(ws.root), config, [manifest])),
    }
    times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(args.runs):  # modes alternate within each round
        for name, (cold, run) in modes.items():
            if cold:
                fresh_cache()
            times[name].append(_timed(run)[0])
    rows = [(name, statistics.median(ts)) for name, ts in times.items()]
    t_lib = rows[0][1]
    print(f"\npreprocessing {n_cases} whole images at {cfg.preprocess.spacing} mm on {os.cpu_count()} cores, "
          f"median of {args.runs} rounds")
    print(f"{'mode':<52} {'seconds':>8} {'cases/s':>8} {'vs library':>10}")
    for name, t in rows:
        print(f"{name:<52} {t:8.2f} {n_cases / t:8.1f} {t / t_lib:10.2f}")

    t_lib_re, _ = _timed(lambda: ingest_site(sites.get("east"), ws, task="liver"))
    t_pf_re, _ = _timed(lambda: _in_flow(ingest, str(ws.root), str(sites_file)))
    generate_study("east", PROFILES["east"], args.studies, 0, ws.incoming)
    t_pf_new, _ = _timed(lambda: _in_flow(ingest, str(ws.root), str(sites_file)))
    print(f"\nre-ingest, unchanged:    library {t_lib_re:.2f} s, prefect map {t_pf_re:.2f} s "
          f"(ratio {t_pf_re / t_lib_re:.2f})")
    converted = json.loads((ws.reports / "east" / "ingest-report.json").read_text())["summary"]
    print(f"re-ingest, +1 study:     prefect map {t_pf_new:.2f} s ({converted['volumes_converted_now']} converted, "
          f"{converted['volumes_unchanged']} unchanged)")
    shutil.rmtree(root, ignore_errors=True)


def _in_flow(ingest, workspace: str, sites_file: str):
    from prefect import flow

    @flow(name="bench-ingest")
    def bench() -> tuple[str, int]:
        return ingest(workspace, sites_file, "east")

    return bench()


if __name__ == "__main__":
    main()
