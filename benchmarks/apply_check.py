"""Does applying a registered model give what the pipeline reported? Checked on a workspace after a run.

For each target site: the site's held-out test studies are found among its raw DICOM series (through
the workspace's de-identification key), ``tl-med predict`` segments them as acquired, and the Dice of
its masks against the true masks is printed beside the test Dice the pipeline reported for that
version. Every SEG is checked with dicom3tools' ``dciodvfy``. Then the version is exported as a MONAI
bundle (the library call, so no approval is needed for this check), ``python -m monai.bundle run``
segments the site's de-identified test images, and its masks are compared voxel by voxel with
``tl-med predict`` on the same images.

Usage::

    make demo && python benchmarks/apply_check.py --workspace tlmed-workspace
    python benchmarks/apply_check.py --workspace W --sites east --version 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, default=Path("tlmed-workspace"))
    ap.add_argument("--sites", default="east,west")
    ap.add_argument("--version", default=None, help="registered version (default: the newest)")
    return ap.parse_args()


def _dice(a, b) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def _held_out(ws, site: str) -> list[tuple[Path, Path]]:
    """(raw DICOM series folder, true label) of the site's test split."""
    import pydicom

    from tl_med.ingest.deid import case_id

    key = ws.deid_key()
    test = {c["case_id"] for c in json.loads(ws.site_manifest(site).read_text())["test"]}
    found = []
    for folder in sorted(p for p in (ws.incoming / site / "dicom").iterdir() if p.is_dir()):
        first = next(p for p in folder.rglob("*") if p.is_file())
        uid = pydicom.dcmread(first, stop_before_pixels=True).SeriesInstanceUID
        if case_id(key, uid) in test:
            found.append((folder, ws.incoming / site / "labels" / f"{uid}.nii.gz"))
    return found


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tl_med.cli", *args], capture_output=True, text=True)


def check_site(ws, tracker, site: str, version: str | None, tmp: Path) -> None:
    import nibabel as nib
    import numpy as np

    from tl_med.export.bundle import export_bundle
    from tl_med.manifests import datalist
    from tl_med.predict.models import download_version, resolve_version
    from tests.validators import dciodvfy_errors

    name = f"tlmed-liver-{site}"
    versions = tracker.client.search_model_versions(f"name = '{name}'")
    number = version or str(max(int(v.version) for v in versions))
    mv = resolve_version(f"models:/{name}/{number}", site=site, task="liver", tracker=tracker)
    reported = float(mv.tags["test_dice"])
    series = _held_out(ws, site)
    out = tmp / site / "predict"
    done = _cli("predict", "--site", site, "--model", f"models:/{name}/{number}", *[str(s) for s, _ in series],
                "--out", str(out), "--json", "--workspace", str(ws.root))
    if done.returncode not in (0, 2):
        sys.exit(done.stderr[-2000:])
    outputs = json.loads(done.stdout)["outputs"]
    dice, seg_errors = [], 0
    for (folder, truth), o in zip(series, outputs):
        mask, label = nib.load(o["nifti"]), nib.load(truth)
        assert mask.shape == label.shape and np.allclose(mask.affine, label.affine, atol=1e-3), folder
        dice.append(_dice(np.asanyarray(mask.dataobj) > 0, np.asanyarray(label.dataobj) > 0))
        seg_errors += len(dciodvfy_errors(Path(o["seg"])))
    measured = float(np.mean(dice))
    print(f"{site}: {name} v{number}: reported test Dice {reported:.3f}; tl-med predict on the {len(series)} held-out "
          f"DICOM series as acquired: {measured:.3f} (difference {measured - reported:+.3f}); "
          f"dciodvfy errors in {len(outputs)} SEGs: {seg_errors}")

    # the MONAI bundle against predict, on the de-identified test NIfTI images
    package = download_version(mv, tracker=tracker, dst=tmp / site / "package")
    bundle = export_bundle(package, tmp / site / "bundle", name=name, version=number, source=f"{name} v{number}")
    images = tmp / site / "data" / "imagesTs"
    images.mkdir(parents=True)
    test = datalist(ws.site_manifest(site), "test")
    for item in test:
        shutil.copy(item["image"], images / Path(item["image"]).name)
    done = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                           str(bundle / "configs" / "inference.json"), "--bundle_root", str(bundle), "--dataset_dir",
                           str(images.parent), "--output_dir", str(tmp / site / "bundle-out")],
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr[-2000:])
    done = _cli("predict", "--site", site, "--model", str(package), *[str(p) for p in sorted(images.iterdir())],
                "--out", str(tmp / site / "predict-nifti"))
    agree, voxels = 0, 0
    for image in sorted(images.iterdir()):
        stem = image.name.removesuffix(".nii.gz")
        theirs = np.asanyarray(nib.load(tmp / site / "bundle-out" / f"{stem}_seg.nii.gz").dataobj).squeeze()
        ours = np.asanyarray(nib.load(tmp / site / "predict-nifti" / f"{stem}.nii.gz").dataobj)
        agree += int((theirs == ours).sum())
        voxels += ours.size
    print(f"{site}: monai.bundle run vs tl-med predict on {len(test)} test images: {agree / voxels:.4%} of "
          f"{voxels} voxels agree")


def main() -> None:
    from tl_med.quiet import silence_known_noise

    silence_known_noise()
    args = _args()
    from tl_med.tracking import Tracker
    from tl_med.workspace import Workspace

    ws = Workspace(args.workspace.resolve())
    tracker = Tracker(ws.tracking_uri, "tlmed-apply-check")
    with tempfile.TemporaryDirectory(prefix="tlmed-apply-") as tmp:
        for site in args.sites.split(","):
            check_site(ws, tracker, site, args.version, Path(tmp))


if __name__ == "__main__":
    main()
