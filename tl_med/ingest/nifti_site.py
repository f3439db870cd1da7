"""Sites defined by existing NIfTI data: a decathlon-style datalist of image/label pairs.

The datalist is JSON with lists of items under ``training``, ``validation`` and/or ``test``
(``{"image": path, "label": path}``, or a bare image path), paths relative to the datalist's
folder. Every referenced file is an input with one outcome. Images must be readable 3-D NIfTI
with a finite affine and finite values; labels must match their image's grid and the task's
label values. Accepted files are rewritten with clean headers (no ``descrip``/``aux_file``/
``intent_name``) under keyed case ids: input file names never reach the workspace.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from tl_med.errors import InputError
from tl_med.ingest.convert import Volume, file_sha256, write_nifti
from tl_med.ingest.deid import case_id as make_case_id
from tl_med.ingest.geometry import orientation_code
from tl_med.ingest.incremental import IngestState, fingerprint
from tl_med.ingest.labels import check_label
from tl_med.ingest.report import IngestReport
from tl_med.ingest.messages import safe_message
from tl_med.manifests import CaseEntry
from tl_med.sites import SiteConfig
from tl_med.workspace import Workspace

__all__ = ["ingest_datalist", "read_datalist"]


def read_datalist(path: Path) -> list[tuple[Path, Path | None]]:
    """(image, label-or-None) pairs of a datalist; a malformed datalist raises :class:`InputError`."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: datalist not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(raw, dict) or not any(k in raw for k in ("training", "validation", "test")):
        raise InputError(f"{path}: a datalist needs a 'training', 'validation' or 'test' list")
    pairs: list[tuple[Path, Path | None]] = []
    for split in ("training", "validation", "test"):
        for i, item in enumerate(raw.get(split, [])):
            if isinstance(item, str):
                item = {"image": item}
            if not isinstance(item, dict) or not isinstance(item.get("image"), str):
                raise InputError(f"{path}: field '{split}.{i}.image' is missing or not a path")
            label = item.get("label")
            pairs.append((path.parent / item["image"], path.parent / label if isinstance(label, str) else None))
    return pairs


def _image(path: Path) -> tuple[Volume, np.ndarray] | str:
    try:
        img = nib.load(path)
        proxy = img.dataobj
        data = proxy.get_unscaled() if hasattr(proxy, "get_unscaled") else np.asanyarray(proxy)
        slope = float(getattr(proxy, "slope", 1.0))
        inter = float(getattr(proxy, "inter", 0.0))
    except FileNotFoundError:
        return "file not found"
    except Exception as exc:  # noqa: BLE001 - unreadable image is a quarantine
        return f"unreadable NIfTI ({safe_message(exc)})"
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        return f"not a 3-D volume (shape {tuple(data.shape)})"
    if not np.all(np.isfinite(img.affine)) or abs(np.linalg.det(img.affine[:3, :3])) < 1e-9:
        return "non-finite or singular affine"
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        return "image has non-finite voxel values"
    return Volume(np.asfortranarray(data), slope, inter), img.affine


def ingest_datalist(site: SiteConfig, ws: Workspace, key: bytes, report: IngestReport, state: IngestState,
                    label_names: dict[str, str]) -> tuple[list[CaseEntry], list[CaseEntry]]:
    """Validate and copy a NIfTI site into the workspace; returns (labelled, unlabelled) entries."""
    assert site.datalist is not None
    pairs = read_datalist(site.datalist)
    root = site.datalist.parent
    out = ws.data / site.name
    suffix = ".nii.gz" if site.ingest.compresslevel else ".nii"
    labelled: list[CaseEntry] = []
    unlabelled: list[CaseEntry] = []
    new_stacks: dict[str, dict[str, Any]] = {}
    seen: set[Path] = set()
    for image_path, label_path in pairs:
        rel = str(image_path.relative_to(root)) if image_path.is_relative_to(root) else image_path.name
        if image_path in seen:
            continue
        seen.add(image_path)
        report.n_inputs += 1 + (label_path is not None)
        sha = file_sha256(image_path) if image_path.is_file() else ""
        cid = make_case_id(key, "nifti:" + sha)
        loaded = _image(image_path) if sha else "file not found"
        if isinstance(loaded, str):
            report.record(rel, "quarantined", loaded)
            if label_path is not None:
                report.record(str(label_path.relative_to(root)), "quarantined",
                              "label of a quarantined image")
            continue
        vol, affine = loaded
        fp = fingerprint(state.options, "nifti", sha)
        record = state.reusable(state.stacks, fp, ws.root, "out")
        if record is None:
            written, written_sha = write_nifti(vol, affine, out / "images" / f"{cid}{suffix}",
                                               site.ingest.compresslevel)
            record = {"out": str(written.relative_to(ws.root)), "size": written.stat().st_size,
                      "entry": dict(case_id=cid, image=str(Path("..") / written.relative_to(ws.root)),
                                    image_sha256=written_sha, shape=list(vol.data.shape),
                                    spacing=[round(float(v), 4) for v in nib.affines.voxel_sizes(affine)],
                                    orientation=orientation_code(affine), modality=site.modality,
                                    source="nifti")}
            report.stacks_converted += 1
        else:
            report.stacks_reused += 1
        new_stacks[fp] = record
        report.record(rel, "converted", case_id=cid)
        entry = CaseEntry(**record["entry"])
        if label_path is None:
            unlabelled.append(entry)
            continue
        label_rel = str(label_path.relative_to(root))
        checked = check_label(label_path, tuple(vol.data.shape), affine, {int(k) for k in label_names})
        if isinstance(checked, str):
            report.record(label_rel, "quarantined", f"label for case {cid}: {checked}")
            unlabelled.append(entry)
            continue
        lp, label_sha = write_nifti(checked, affine, out / "labels" / f"{cid}{suffix}", site.ingest.compresslevel or 1)
        report.record(label_rel, "converted", case_id=cid)
        labelled.append(entry.model_copy(update={"label": str(Path("..") / lp.relative_to(ws.root)),
                                                 "label_sha256": label_sha}))
    state.save(new_stacks, {})
    return labelled, unlabelled
