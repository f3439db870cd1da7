"""Convert one stack (a series, or one part of a split series) into a NIfTI volume.

:func:`convert_stack` is a plain top-level function so a process pool can run it: it builds the
geometry, reads and rescales the pixels, writes the volume (and, when asked, the de-identified
DICOM files), and returns the de-identified manifest facts or the reason it could not.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from tl_med.ingest.convert import planes_of, read_volume, write_nifti
from tl_med.ingest.deid import deidentify
from tl_med.ingest.geometry import build_geometry, orientation_code
from tl_med.ingest.header import Frame
from tl_med.ingest.messages import safe_message
from tl_med.sites import IngestOptions

__all__ = ["StackJob", "StackOutcome", "convert_stack", "nifti_name"]


def nifti_name(cid: str, opts: IngestOptions) -> str:
    return f"{cid}.nii.gz" if opts.compresslevel else f"{cid}.nii"


@dataclass(frozen=True)
class StackJob:
    cid: str
    frames: tuple[Frame, ...]
    fingerprint: str


@dataclass(frozen=True)
class StackOutcome:
    """What became of a stack: ``record`` (manifest facts, output path, size, affine) or ``reason``."""

    cid: str
    record: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def _export_dicom(frames: tuple[Frame, ...], folder: Path, key: bytes, opts: IngestOptions) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    seen: list[Path] = []
    for frame in frames:
        if frame.path not in seen:
            seen.append(frame.path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, path in enumerate(seen):
            ds = deidentify(pydicom.dcmread(path), key, dates=opts.dates)
            ds.save_as(folder / f"{i:05d}.dcm", enforce_file_format=True)


def convert_stack(job: StackJob, out: Path, root: Path, opts: IngestOptions, key: bytes) -> StackOutcome:
    """Geometry, pixels, NIfTI (and de-identified DICOM) for one stack; never raises."""
    geom = build_geometry(list(job.frames), policy=opts.geometry)
    if isinstance(geom, str):
        return StackOutcome(job.cid, reason=f"series rejected: {geom}")
    try:
        vol = planes_of(geom) or read_volume(geom)  # uncompressed planes are streamed to the file
        image, image_sha = write_nifti(vol, geom.affine, out / "images" / nifti_name(job.cid, opts),
                                       compresslevel=opts.compresslevel)
        if opts.keep_dicom:
            _export_dicom(geom.frames, out / "dicom" / job.cid, key, opts)
    except Exception as exc:  # noqa: BLE001 - pixel problems quarantine the series
        return StackOutcome(job.cid, reason=f"series pixel data unusable ({safe_message(exc)})")
    first = geom.frames[0]
    facts = dict(
        case_id=job.cid, image=str(Path("..") / image.relative_to(root)), image_sha256=image_sha,
        shape=list(vol.shape), spacing=[round(v, 4) for v in geom.spacing],
        orientation=orientation_code(geom.affine), modality=first.modality,
        manufacturer=first.manufacturer, model=first.model, acquisition=dict(first.acquisition),
        source="dicom",
    )
    if geom.correction is not None:
        facts["resampled"] = geom.correction.note
    return StackOutcome(job.cid, record={"entry": facts, "out": str(image.relative_to(root)),
                                         "size": image.stat().st_size,
                                         "affine": np.asarray(geom.affine).tolist()})
