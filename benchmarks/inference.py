"""Applying a model to one full-size CT series: `tl-med predict` beside a bare MONAI sliding window.

One synthetic 512×512×300 CT series (0.74 × 0.74 × 1.0 mm, 300 DICOM files) goes through
``tl-med predict`` as a hospital runs it (read and check the series, preprocess, sliding window,
invert onto the series' own grid, write the NIfTI mask and a DICOM SEG). Beside it, a bare MONAI
pass: ``SlidingWindowInferer`` with the same model, window, overlap and batch on the same
preprocessed tensor, nothing else. Both run as fresh processes (imports included), one after the
other; wall time and peak resident memory (``ru_maxrss`` of the child) are printed with their
ratio. The model is the profile's network with seeded random weights (the cost of inference does
not depend on what the weights learnt).

Usage::

    python benchmarks/inference.py                      # realistic profile (1.5×1.5×2 mm, 96³ windows)
    python benchmarks/inference.py --profile demo       # the demo's coarse 4 mm model
    python benchmarks/inference.py --slices 60          # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="realistic", choices=["tiny", "demo", "realistic"])
    ap.add_argument("--size", type=int, default=512, help="rows and columns")
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--workspace", type=Path, help="keep the series, package and outputs here (default: temp)")
    ap.add_argument("--bare", nargs=2, metavar=("PACKAGE", "TENSOR"), help=argparse.SUPPRESS)
    return ap.parse_args()


def write_series(folder: Path, size: int, slices: int, seed: int = 0) -> Path:
    """A CT series: body ellipse, a liver-like ellipsoid, noise; int16 with a -1024 intercept."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixel, thick = 0.74, 1.0
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx = cy = size / 2
    body = ((xx - cx) / (size * 0.42)) ** 2 + ((yy - cy) / (size * 0.32)) ** 2 < 1
    for k in range(slices):
        z = (k - slices / 2) / (slices * 0.3)
        liver = ((xx - cx * 0.7) / (size * 0.18)) ** 2 + ((yy - cy * 1.05) / (size * 0.15)) ** 2 + z ** 2 < 1
        hu = np.where(body, 40.0, -1000.0) + np.where(liver, 20.0, 0.0) + rng.normal(0, 12, (size, size))
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.StudyID, ds.AccessionNumber = "BENCH^CT", "BENCH1", "1", "B1"
        ds.Modality, ds.Manufacturer, ds.SeriesNumber, ds.InstanceNumber = "CT", "tl_med benchmark", 1, k + 1
        ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName, ds.PatientBirthDate, ds.PatientSex = \
            "20260101", "120000", "", "", "O"
        ds.ImagePositionPatient = [-size * pixel / 2, -size * pixel / 2, k * thick]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [pixel, pixel], thick
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.PixelData = np.clip(hu + 1024, -32768, 32767).astype(np.int16).tobytes()
        ds.save_as(folder / f"{k:04d}.dcm", enforce_file_format=True)
    return folder


def _child(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak resident MiB, stdout) of one child process (``wait4``'s own usage)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            sys.exit(f"{' '.join(cmd[:5])} … failed (exit {proc.returncode}):\n{err.read()[-3000:]}")
        return wall, usage.ru_maxrss / 1024, out.read()


def bare(package: Path, tensor: Path) -> None:
    """The bare pass: load the model and tensor, one SlidingWindowInferer call, print seconds."""
    import torch
    from monai.inferers import SlidingWindowInferer

    from tl_med.models.spec import load_package

    model, spec = load_package(package)
    image = torch.load(tensor, weights_only=True)
    inferer = SlidingWindowInferer(roi_size=spec.preprocess.patch_size, sw_batch_size=spec.inference.sw_batch_size,
                                   overlap=spec.inference.overlap, mode=spec.inference.mode, padding_mode="replicate")
    t0 = time.perf_counter()
    with torch.inference_mode():
        logits = inferer(image[None], model)
    print(json.dumps({"window_seconds": time.perf_counter() - t0, "shape": list(logits.shape)}))


def main() -> None:
    from tl_med.quiet import silence_known_noise

    silence_known_noise()
    args = _args()
    if args.bare:
        bare(Path(args.bare[0]), Path(args.bare[1]))
        return
    import torch
    from monai.data import MetaTensor

    from tl_med.config import PipelineConfig
    from tl_med.inference import Predictor
    from tl_med.models.spec import ModelSpec, load_package, save_package
    from tl_med.models.zoo import build_network
    from tl_med.predict.inputs import collect

    root = (args.workspace or Path(tempfile.mkdtemp(prefix="tlmed-infer-bench-"))).resolve()
    series = root / f"ct-{args.size}x{args.size}x{args.slices}"
    if not series.is_dir() or len(list(series.iterdir())) != args.slices:
        t0 = time.perf_counter()
        write_series(series, args.size, args.slices)
        print(f"wrote {args.slices} DICOM files ({args.size}×{args.size}) in {time.perf_counter() - t0:.0f} s")
    cfg = PipelineConfig.profile(args.profile)
    spec = ModelSpec.from_config(cfg, task="liver", site="bench", modality="CT",
                                 labels={"0": "background", "1": "liver"})
    torch.manual_seed(0)
    package = save_package(root / f"package-{args.profile}", build_network(spec.network), spec)
    (item,) = collect([series])
    volume = item.volume()
    assert not isinstance(volume, str), volume
    predictor = Predictor(*load_package(package), torch.device("cpu"))
    tensor = predictor.from_array({"image": MetaTensor(torch.as_tensor(volume[0]),
                                                       affine=torch.as_tensor(volume[1], dtype=torch.float64))})["image"]
    torch.save(tensor.as_tensor().contiguous(), root / "tensor.pt")
    del predictor, volume
    print(f"profile {args.profile}: {list(cfg.preprocess.spacing)} mm, window {list(cfg.preprocess.patch_size)}, "
          f"overlap {cfg.inference.overlap}; preprocessed tensor {list(tensor.shape)}; {torch.get_num_threads()} "
          f"threads on {os.cpu_count()} cores")
    bare_wall, bare_mem, bare_out = _child([sys.executable, __file__, "--bare", str(package), str(root / "tensor.pt")])
    out = root / "out"
    pred_wall, pred_mem, pred_out = _child([sys.executable, "-m", "tl_med.cli", "predict", str(series), "--site",
                                           "bench", "--model", str(package), "--out", str(out), "--json"])
    doc = json.loads(pred_out)
    assert doc["outputs"][0]["error"] is None, doc
    window = json.loads(bare_out)["window_seconds"]
    print(f"\n{'':<36}{'wall s':>9}{'peak MiB':>10}")
    print(f"{'bare MONAI sliding window (process)':<36}{bare_wall:9.1f}{bare_mem:10.0f}   (window alone {window:.1f} s)")
    print(f"{'tl-med predict → NIfTI + DICOM SEG':<36}{pred_wall:9.1f}{pred_mem:10.0f}")
    print(f"{'ratio predict / bare':<36}{pred_wall / bare_wall:9.2f}{pred_mem / bare_mem:10.2f}   (goal ≤ 1.3×)")
    print(f"outputs: {out} (SEG {Path(doc['outputs'][0]['seg']).stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
