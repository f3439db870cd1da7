"""Ingest speed: tl_med against dcm2niix, side by side on the same corpus.

Builds (or takes, ``--corpus``) a folder of 512×512 CT-like single-frame DICOM slices in several
series, then converts it with tl_med's ingest (scan, group, geometry, de-identified naming,
validation, NIfTI, manifest, report) and with dcm2niix, alternating, ``--runs`` times each, both
with the same output compression. Each run is a fresh process and a fresh output folder, so
tl_med's incremental reuse never applies (a separate line reports the unchanged re-ingest).

The timed runs are kept free of the other tool's and the harness's own work: the order of the two
tools alternates from run to run, dirty pages are flushed (``sync``) before each timed run so
neither tool pays for the other's write-back, each later run's output is deleted once measured,
and no memory sampler runs during a timed run (walking ``/proc`` and reading PSS every 20 ms costs
a good part of a core, which a tool that uses every core pays for and a single-threaded one does
not). Peak memory comes from one further, sampled and untimed run of each tool.

Prints per tool: median wall time, slices/s, input MB/s, peak memory (PSS summed over the whole
process tree, sampled every 20 ms) and output size, then the ratio tl_med / dcm2niix.

Usage::

    python benchmarks/ingest.py                      # 8 series × 260 slices, gzip level 1
    python benchmarks/ingest.py --compress 0         # uncompressed .nii for both
    python benchmarks/ingest.py --series 2 --slices 100 --runs 3   # a quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tl_med.data.dicom_writer import axial_ct_slice  # noqa: E402 - after the repository is on the path


def _volume(rng: np.random.Generator, n: int, size: int = 512) -> np.ndarray:
    """A CT-like int16 volume (HU + 1024): air, a body ellipse, organs, noise."""
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 < 1
    organ = ((x - 0.25) / 0.35) ** 2 + ((y + 0.1) / 0.3) ** 2 < 1
    base = np.where(body, 1064, 24) + np.where(organ, 60, 0)
    out = np.empty((n, size, size), np.uint16)
    for k in range(n):
        out[k] = np.clip(base + rng.normal(0, 12, (size, size)), 0, 4095)
    return out


def build_corpus(folder: Path, n_series: int, n_slices: int, seed: int = 0) -> int:
    """Write ``n_series`` axial CT series of ``n_slices`` 512² slices (explicit VR little endian)."""
    rng = np.random.default_rng(seed)
    for s in range(n_series):
        study, series, frame = generate_uid(), generate_uid(), generate_uid()
        vol = _volume(rng, n_slices)
        out = folder / f"patient{s:02d}" / f"series{s:02d}"
        out.mkdir(parents=True)
        for k in range(n_slices):
            ds = axial_ct_slice(study, series, frame, z=-300.0 + 1.25 * k, origin=(-250.0, -250.0),
                                pixel_spacing=(0.9765625, 0.9765625), thickness=1.25)
            ds.PatientName, ds.PatientID, ds.StudyDate = f"BENCH^{s}", f"BENCH{s}", "20240101"
            ds.Manufacturer, ds.InstanceNumber = "BENCH", n_slices - k
            ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
            ds.PixelData = vol[k].tobytes()
            ds.save_as(out / f"{k:05d}", enforce_file_format=True)
    return n_series * n_slices


def _pss(pid: int) -> int:
    """Proportional set size of one process (shared pages split between their users), bytes."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int] | None:
    """The direct children of ``pid`` (from /proc/<pid>/task/*/children), or None if unsupported."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []  # gone
    kids: list[int] = []
    for tid in tasks:
        try:
            kids += map(int, Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
        except FileNotFoundError:
            if not Path(f"/proc/{pid}/task/{tid}").exists():
                continue  # the thread ended
            return None  # a kernel without CONFIG_PROC_CHILDREN
        except OSError:
            continue
    return kids


def _tree_rss(root: int) -> int:
    """Memory (PSS) of ``root`` and all its descendants, from /proc."""
    parent: dict[int, int] | None = None
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += _pss(pid)
        kids = _children(pid)
        if kids is None:  # fall back to scanning every process's parent
            if parent is None:
                parent = {}
                for stat in Path("/proc").glob("[0-9]*/stat"):
                    try:
                        parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                    except (OSError, ValueError, IndexError):
                        continue
            kids = [c for c, p in parent.items() if p == pid]
        todo += kids
    return total


def _run(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of one timed run: nothing else of the harness runs meanwhile."""
    os.sync()  # the previous run's dirty pages are written back before, not during, this run
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr.decode()[-2000:]}")
    return wall


def _measure(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak MiB (PSS) of the command's whole process tree, sampled every 20 ms).

    The tree matters: tl_med converts in worker processes, dcm2niix in one. The sampler costs
    CPU, so this run's time is not one of the timed runs.
    """
    os.sync()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err.decode()[-2000:]}")
    return wall, peak[0] / 2**20


def _size(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*.nii*")) / 2**20


_OURS = """
import sys
from pathlib import Path
from tl_med.ingest.site import ingest_site
from tl_med.sites import IngestOptions, SiteConfig
from tl_med.workspace import Workspace
corpus, ws_root, level = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
ws = Workspace(ws_root).ensure()
site = SiteConfig(name="bench", dicom_dir=corpus, labels_dir=corpus.parent / "no-labels",
                  ingest=IngestOptions(compresslevel=level))
result = ingest_site(site, ws, task="bench", key=b"b" * 32)
s = result.report.summary()
assert s["reconciled"] and s["quarantined"] == 0, s
"""


def main() -> None:
    from tl_med.quiet import silence_known_noise

    silence_known_noise()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, help="an existing DICOM folder (default: build one)")
    ap.add_argument("--series", type=int, default=8)
    ap.add_argument("--slices", type=int, default=260)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--compress", type=int, default=1, choices=range(0, 10), help="gzip level, 0 = none")
    args = ap.parse_args()
    dcm2niix = Path(sys.executable).parent / "dcm2niix"
    dcm2niix = str(dcm2niix) if dcm2niix.exists() else shutil.which("dcm2niix")
    if not dcm2niix:
        raise SystemExit("dcm2niix not found (pip install dcm2niix)")
    tmp = Path(tempfile.mkdtemp(prefix="tlmed-bench-"))
    try:
        corpus = args.corpus or tmp / "corpus"
        if args.corpus is None:
            t0 = time.perf_counter()
            build_corpus(corpus, args.series, args.slices)
            print(f"built corpus: {args.series} series x {args.slices} slices in {time.perf_counter() - t0:.1f} s")
        files = [p for p in corpus.rglob("*") if p.is_file()]
        n_slices, mb = len(files), sum(p.stat().st_size for p in files) / 2**20
        z = ["-z", "n"] if args.compress == 0 else ["-z", "i", f"-{args.compress}"]
        print(f"corpus: {n_slices} files, {mb:.0f} MB; output: "
              f"{'uncompressed .nii' if args.compress == 0 else f'gzip level {args.compress}'}; "
              f"{len(os.sched_getaffinity(0))} cores available to each tool")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for f in files:  # warm the page cache once so that neither tool pays the first read
            f.read_bytes()
        def command(tool: str, out: Path) -> list[str]:
            if tool == "dcm2niix":
                out.mkdir()
                return [dcm2niix, *z, "-f", "%s_%j", "-o", str(out), str(corpus)]
            return [sys.executable, "-c", _OURS, str(corpus), str(out), str(args.compress)]

        times: dict[str, list[float]] = {"tl_med": [], "dcm2niix": []}
        for run in range(args.runs):
            order = ("dcm2niix", "tl_med") if run % 2 == 0 else ("tl_med", "dcm2niix")
            for tool in order:
                out = tmp / f"{tool}-{run}"
                times[tool].append(_run(command(tool, out), env if tool == "tl_med" else None))
                if run:  # run 0's output is kept for the sizes and the re-ingest below
                    shutil.rmtree(out)
            print(f"run {run + 1}: dcm2niix {times['dcm2niix'][-1]:.2f} s, tl_med {times['tl_med'][-1]:.2f} s")
        peaks = {}
        for tool in times:  # one untimed run each with the memory sampler
            out = tmp / f"{tool}-mem"
            peaks[tool] = _measure(command(tool, out), env if tool == "tl_med" else None)[1]
            shutil.rmtree(out)
        again = _run([sys.executable, "-c", _OURS, str(corpus), str(tmp / "tl_med-0"), str(args.compress)], env)
        sizes = {"tl_med": _size(tmp / "tl_med-0" / "data"), "dcm2niix": _size(tmp / "dcm2niix-0")}
        print(f"\n{'tool':<10}{'median s':>10}{'slices/s':>10}{'MB/s':>8}{'peak MiB':>10}{'output MB':>11}")
        med = {}
        for tool, rows in times.items():
            med[tool] = statistics.median(rows)
            print(f"{tool:<10}{med[tool]:>10.2f}{n_slices / med[tool]:>10.0f}{mb / med[tool]:>8.0f}{peaks[tool]:>10.0f}"
                  f"{sizes[tool]:>11.0f}")
        print(f"\nratio tl_med / dcm2niix (median wall time): {med['tl_med'] / med['dcm2niix']:.2f}")
        print(f"tl_med re-ingest of the unchanged corpus (incremental): {again:.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
