"""Inputs to predict on: NIfTI files and DICOM series, each read as one volume and its RAS affine.

A DICOM folder is read the way ingest reads a site (every file's header, grouping into stacks,
slice order from the positions, the geometry checks), but nothing is de-identified: the SEG
written back must reference the original instances. A file or series that ingest would
quarantine is an :class:`Input` with that same one-line ``reason``. Inputs are named after what
the user passed (file stem or folder name), never after anything inside the files.

Example:
    >>> # for item in collect([Path("study_0001"), Path("scan.nii.gz")]): ...
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from tl_med.ingest.convert import read_volume
from tl_med.ingest.duplicates import drop_duplicates, split_repeats
from tl_med.ingest.geometry import SeriesGeometry, build_geometry, group_series
from tl_med.ingest.report import IngestReport
from tl_med.ingest.scan import scan_dicom_tree

__all__ = ["Input", "collect", "nifti_stem", "MIN_SLICES"]

MIN_SLICES = 3  # fewer single-frame slices: a localizer, a dose screen or a key image, not a volume


@dataclass
class Input:
    """One volume to segment, or why it cannot be: ``reason`` (one line, no values from the file)."""

    name: str
    source: Path
    kind: str  # "nifti" | "dicom"
    modality: str = ""
    geometry: SeriesGeometry | None = None
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    channels: int = 1  # a 4-D NIfTI's last axis: co-registered sequences of one case

    def volume(self) -> tuple[np.ndarray, np.ndarray] | str:
        """(voxel array, RAS affine), or a reason. NIfTI inputs are predicted from their file."""
        assert self.geometry is not None
        try:
            vol = read_volume(self.geometry)
        except Exception as exc:  # noqa: BLE001 - pixel problems are a reason, like ingest's quarantine
            return f"series pixel data unusable ({type(exc).__name__})"
        data = np.asarray(vol.data, dtype=np.float32)
        if (vol.slope, vol.intercept) != (1.0, 0.0):
            data = data * vol.slope + vol.intercept
        return data, np.asarray(self.geometry.affine)


def nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _nifti(path: Path) -> Input:
    item = Input(nifti_stem(path), path, "nifti")
    try:
        img = nib.load(path)
        if len(img.shape) not in (3, 4) or not np.all(np.isfinite(img.affine)):
            item.reason = f"not a 3-D image (or 4-D, channels last) with a finite affine (shape {img.shape})"
        item.channels = img.shape[3] if len(img.shape) == 4 else 1
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a reason
        item.reason = f"not a readable NIfTI file ({type(exc).__name__})"
    return item


def _dicom(root: Path, name: str, files: list[Path] | None = None) -> Iterator[Input]:
    report = IngestReport(site=name, key=b"predict")
    frames = drop_duplicates(scan_dicom_tree(root, report, rel_to=root, files=files,
                                             description=f"read {name}: headers"), report)
    for q in report.quarantined:
        yield Input(f"{name}/{q.file}" if files is None else name, root / q.file, "dicom", reason=q.reason)
    stacks = sorted((part for stack in group_series(frames).values() for _, part in split_repeats(stack)),
                    key=lambda s: (s[0].series_uid, s[0].iop, s[0].echo, s[0].stack, s[0].repeat))
    if not stacks and not report.quarantined:
        skipped = report.reasons("skipped")
        why = f" ({next(iter(skipped))})" if skipped else ""
        yield Input(name, root, "dicom", reason=f"no DICOM image series here{why}")
    names = [name] if len(stacks) == 1 else [f"{name}-{k + 1}" for k in range(len(stacks))]
    for series_name, stack in zip(names, stacks):
        if len(stack) < MIN_SLICES and all(f.index is None for f in stack):
            yield Input(series_name, root, "dicom", modality=stack[0].modality,
                        reason=f"{len(stack)}-slice series (a localizer or a single image): not a volume to segment")
            continue
        geom = build_geometry(stack, policy="refuse")
        if isinstance(geom, str):
            yield Input(series_name, root, "dicom", modality=stack[0].modality, reason=f"series rejected: {geom}")
        else:
            yield Input(series_name, root, "dicom", modality=stack[0].modality, geometry=geom)


def collect(paths: list[Path]) -> list[Input]:
    """Every input named by ``paths``: NIfTI files, DICOM files (an enhanced multi-frame image),
    and each image series under each folder."""
    out: list[Input] = []
    for path in paths:
        if path.is_dir():
            out.extend(_dicom(path, path.name))
        elif path.is_file() and path.name.endswith((".nii", ".nii.gz")):
            out.append(_nifti(path))
        elif path.is_file():
            out.extend(_dicom(path.parent, path.stem, files=[path]))
        else:
            out.append(Input(nifti_stem(path), path, "missing", reason="no such file or folder"))
    seen: dict[str, int] = {}
    for item in out:  # two inputs of the same name (study_0001 of two sites) get distinct outputs
        seen[item.name] = seen.get(item.name, 0) + 1
        if seen[item.name] > 1:
            item.name = f"{item.name}-{seen[item.name]}"
    return out
