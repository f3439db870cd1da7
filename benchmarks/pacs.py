"""Pull-and-ingest from an Orthanc PACS, beside copying the same files from disk and ingesting them.

Generates ``--studies`` synthetic studies of the demo's ``east`` CT scanner (full resolution),
sends them to a throwaway local Orthanc with dcmtk's ``storescu`` (timed apart: that is the
modality's side), then, alternating, ``--runs`` times each into fresh workspaces:

- ``pacs``: ``pull_site`` (REST: find, list, fetch every instance) then ``ingest_site``;
- ``disk``: ``shutil.copytree`` of the generated files into the site folder, then ``ingest_site``.

Prints medians of the transfer alone and of transfer + ingest (studies/min, MB/s) and the ratio
pacs / disk. Needs ``Orthanc`` and ``storescu`` (apt-get install orthanc dcmtk).

Usage::

    python benchmarks/pacs.py                 # 24 studies, 3 runs
    python benchmarks/pacs.py --studies 40 --runs 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

USER, PASSWORD = "bench", "bench-password"


def _site_yaml(path: Path, url: str) -> Path:
    path.write_text(
        "task: liver\nsites:\n"
        "  - {name: north, role: source, dicom_dir: incoming/north/dicom, labels_dir: incoming/north/labels}\n"
        "  - name: east\n    role: target\n    dicom_dir: incoming/east/dicom\n    labels_dir: incoming/east/labels\n"
        f"    pacs: {{url: '{url}', username_env: BENCH_PACS_USER, password_env: BENCH_PACS_PASSWORD}}\n")
    return path


def main() -> None:
    from tl_med.quiet import silence_known_noise

    silence_known_noise()
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=24)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from tl_med.data.scanners import PROFILES
    from tl_med.data.synthetic import generate_study
    from tl_med.ingest.site import ingest_site
    from tl_med.pacs.local import local_orthanc, send
    from tl_med.pacs.pull import pull_site
    from tl_med.sites import load_sites
    from tl_med.workspace import Workspace

    root = Path(tempfile.mkdtemp(prefix="tlmed-pacs-bench-"))
    corpus = root / "corpus"
    for i in range(args.studies):
        generate_study("east", PROFILES["east"], i, 0, corpus)
    dicom = corpus / "east" / "dicom"
    files = [p for p in dicom.rglob("*") if p.is_file()]
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    os.environ.update(BENCH_PACS_USER=USER, BENCH_PACS_PASSWORD=PASSWORD, TL_MED_DEID_KEY="00" * 32)
    print(f"corpus: {args.studies} studies, {len(files)} files, {megabytes:.1f} MB (east CT, full resolution)")

    with local_orthanc(root / "orthanc", USER, PASSWORD) as pacs:
        start = time.perf_counter()
        send(dicom, pacs.dicom_port)
        stored = time.perf_counter() - start
        print(f"storescu into Orthanc (the modality's side, not compared): {stored:.1f} s")
        times: dict[str, list[tuple[float, float]]] = {"pacs": [], "disk": []}
        for run in range(args.runs):
            for mode in ("pacs", "disk"):
                ws = Workspace(root / f"{mode}-{run}").ensure()
                sites = load_sites(_site_yaml(root / f"sites-{mode}-{run}.yaml", pacs.url), ws.root)
                east = sites.get("east")
                start = time.perf_counter()
                if mode == "pacs":
                    report = pull_site(east, ws)
                    assert report.pulled == args.studies and not report.failed, report.line()
                else:
                    shutil.copytree(dicom, east.dicom_dir)
                moved = time.perf_counter() - start
                result = ingest_site(east, ws, task="liver")
                total = time.perf_counter() - start
                assert result.n_unlabelled == args.studies, result.report.summary()
                times[mode].append((moved, total))
                shutil.rmtree(ws.root)

    print(f"\nmedian of {args.runs} alternating runs; ingest = de-identified NIfTI + manifest")
    print(f"{'mode':<28} {'transfer s':>10} {'studies/min':>11} {'MB/s':>7} {'+ingest s':>10} {'studies/min':>11} "
          f"{'MB/s':>7}")
    med = {m: (statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts)) for m, ts in times.items()}
    for mode, label in (("pacs", "Orthanc pull (REST)"), ("disk", "copy from disk (peer)")):
        moved, total = med[mode]
        print(f"{label:<28} {moved:10.2f} {args.studies / moved * 60:11.0f} {megabytes / moved:7.1f} "
              f"{total:10.2f} {args.studies / total * 60:11.0f} {megabytes / total:7.1f}")
    print(f"ratio pacs / disk: transfer {med['pacs'][0] / med['disk'][0]:.2f}, "
          f"transfer + ingest {med['pacs'][1] / med['disk'][1]:.2f}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
