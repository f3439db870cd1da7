"""Sites defined by existing NIfTI data: a decathlon-style datalist of image/label pairs.

The datalist is JSON with lists of items under ``training``, ``validation`` and/or ``test``
(``{"image": path, "label": path}``, or a bare image path), paths relative to the datalist's
folder. Every referenced file is an input with one outcome. Images must be readable 3-D NIfTI
with a finite affine and finite values; labels must match their image's grid and the task's
label values. A multi-channel task (``channels`` in ``sites.yaml``) takes either a list of
files per item, one per channel in the task's order, on one voxel grid (co-registered), or one
4-D file whose last axis holds the channels (the Medical Segmentation Decathlon's layout); the
case is written as one 4-D NIfTI, channels last. An item's ``"class"`` is its case-level class
(one of the task's ``classes``; an input of the report named ``<datalist>#<split>.<i>.class``). Accepted files are rewritten with clean headers (no ``descrip``/``aux_file``/
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


def read_datalist(path: Path) -> list[tuple[tuple[Path, ...], Path | None, tuple[str, object] | None]]:
    """(image files, label-or-None, (where, class)-or-None) of each item of a datalist; a malformed
    datalist raises :class:`InputError`."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: datalist not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(raw, dict) or not any(k in raw for k in ("training", "validation", "test")):
        raise InputError(f"{path}: a datalist needs a 'training', 'validation' or 'test' list")
    pairs: list[tuple[tuple[Path, ...], Path | None, tuple[str, object] | None]] = []
    for split in ("training", "validation", "test"):
        for i, item in enumerate(raw.get(split, [])):
            if isinstance(item, (str, list)):
                item = {"image": item}
            image = item.get("image") if isinstance(item, dict) else None
            images = [image] if isinstance(image, str) else image
            if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
                raise InputError(f"{path}: field '{split}.{i}.image' is missing or not a path (or a list of paths)")
            label = item.get("label")
            klass = (f"{path.name}#{split}.{i}.class", item["class"]) if "class" in item else None
            pairs.append((tuple(path.parent / p for p in images), path.parent / label if isinstance(label, str) else None,
                          klass))
    return pairs


def _image(path: Path, n_channels: int = 1) -> tuple[Volume, np.ndarray] | str:
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
    if n_channels > 1 and data.ndim == 4:  # channels last (the Decathlon's layout)
        if data.shape[3] != n_channels:
            return f"a 4-D image with {data.shape[3]} channels where the task has {n_channels}"
    elif data.ndim != 3:
        return f"not a 3-D volume (shape {tuple(data.shape)})"
    if not np.all(np.isfinite(img.affine)) or abs(np.linalg.det(img.affine[:3, :3])) < 1e-9:
        return "non-finite or singular affine"
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        return "image has non-finite voxel values"
    return Volume(np.asfortranarray(data), slope, inter), img.affine


def _channels(paths: tuple[Path, ...], names: tuple[str, ...], atol_mm: float = 0.01
              ) -> tuple[Volume, np.ndarray] | tuple[int, str]:
    """One volume of a case's image files (channels last when several), or (index of the file
    at fault, reason)."""
    n = max(1, len(names))
    if len(paths) not in (1, n):
        return 0, f"{len(paths)} image files where the task has {n} channels ({', '.join(names)})"
    loaded = []
    for i, path in enumerate(paths):
        got = _image(path, n if len(paths) == 1 else 1)
        if isinstance(got, str):
            return i, (f"channel {names[i]}: " if len(paths) > 1 else "") + got
        loaded.append(got)
    if len(paths) == 1 and (n == 1 or loaded[0][0].data.ndim == 4):
        return loaded[0]
    if len(paths) == 1:
        return 0, f"a 3-D image where the task has {n} channels ({', '.join(names)}): list one file per channel"
    (first, affine), grids = loaded[0], loaded[1:]
    for i, (vol, aff) in enumerate(grids, start=1):
        if vol.data.shape != first.data.shape or not np.allclose(aff, affine, atol=atol_mm):
            return i, (f"channel {names[i]} is not on channel {names[0]}'s voxel grid (shape "
                       f"{tuple(vol.data.shape)} vs {tuple(first.data.shape)}, affine differs by up to "
                       f"{float(np.abs(aff - affine).max()):.3g} mm): co-register the sequences first")
    stacked = np.stack([v.data.astype(np.float32) * np.float32(v.slope) + np.float32(v.intercept)
                        for v, _ in loaded], axis=-1)
    return Volume(np.asfortranarray(stacked)), affine


def ingest_datalist(site: SiteConfig, ws: Workspace, key: bytes, report: IngestReport, state: IngestState,
                    label_names: dict[str, str], channels: tuple[str, ...] = (), classes: tuple[str, ...] | None = None
                    ) -> tuple[list[CaseEntry], list[CaseEntry]]:
    """Validate and copy a NIfTI site into the workspace; returns (labelled, unlabelled) entries.
    Items' classes are read when the task's ``classes`` are given."""
    assert site.datalist is not None
    pairs = read_datalist(site.datalist)
    root = site.datalist.parent
    out = ws.data / site.name
    suffix = ".nii.gz" if site.ingest.compresslevel else ".nii"
    labelled: list[CaseEntry] = []
    unlabelled: list[CaseEntry] = []
    new_stacks: dict[str, dict[str, Any]] = {}
    seen: set[tuple[Path, ...]] = set()

    def rel(p: Path) -> str:
        return str(p.relative_to(root)) if p.is_relative_to(root) else p.name

    for image_paths, label_path, klass in pairs:
        klass = klass if classes is not None else None
        if image_paths in seen:
            continue
        seen.add(image_paths)
        report.n_inputs += len(image_paths) + (label_path is not None) + (klass is not None)
        shas = [file_sha256(p) if p.is_file() else "" for p in image_paths]
        if not all(shas):
            loaded: tuple[Volume, np.ndarray] | tuple[int, str] = (shas.index(""), "file not found")
        else:
            loaded = _channels(image_paths, channels)
        if isinstance(loaded[1], str):
            bad, reason = loaded
            for i, p in enumerate(image_paths):
                report.record(rel(p), "quarantined", reason if i == bad else
                              f"another channel of this case was quarantined ({rel(image_paths[bad])})")
            if label_path is not None:
                report.record(rel(label_path), "quarantined", "label of a quarantined image")
            if klass is not None:
                report.record(klass[0], "quarantined", "class of a quarantined image")
            continue
        vol, affine = loaded
        sha = shas[0] if len(shas) == 1 else fingerprint("channels", shas)
        cid = make_case_id(key, "nifti:" + sha)
        fp = fingerprint(state.options, "nifti", sha)
        record = state.reusable(state.stacks, fp, ws.root, "out")
        if record is None:
            written, written_sha = write_nifti(vol, affine, out / "images" / f"{cid}{suffix}",
                                               site.ingest.compresslevel)
            record = {"out": str(written.relative_to(ws.root)), "size": written.stat().st_size,
                      "entry": dict(case_id=cid, image=str(Path("..") / written.relative_to(ws.root)),
                                    image_sha256=written_sha, shape=list(vol.data.shape[:3]),
                                    spacing=[round(float(v), 4) for v in nib.affines.voxel_sizes(affine)],
                                    orientation=orientation_code(affine), modality=site.modality,
                                    source="nifti")}
            report.stacks_converted += 1
        else:
            report.stacks_reused += 1
        new_stacks[fp] = record
        for p in image_paths:
            report.record(rel(p), "converted", case_id=cid)
        entry = CaseEntry(**record["entry"])
        if klass is not None:
            where, value = klass
            if isinstance(value, str) and value in (classes or ()):
                report.record(where, "converted", case_id=cid)
                entry = entry.model_copy(update={"case_class": value})
            else:
                report.record(where, "quarantined", f"unknown class (the task's classes: {', '.join(classes) or 'none'})")
        if label_path is None:
            unlabelled.append(entry)
            continue
        label_rel = rel(label_path)
        notes: list[str] = []
        checked = check_label(label_path, tuple(vol.data.shape[:3]), affine, {int(k) for k in label_names},
                              notes=notes)
        if isinstance(checked, str):
            report.record(label_rel, "quarantined", f"label for case {cid}: {checked}")
            unlabelled.append(entry)
            continue
        lp, label_sha = write_nifti(checked, affine, out / "labels" / f"{cid}{suffix}", site.ingest.compresslevel or 1)
        report.record(label_rel, "converted", "; ".join(notes), case_id=cid)
        labelled.append(entry.model_copy(update={"label": str(Path("..") / lp.relative_to(ws.root)),
                                                 "label_sha256": label_sha}))
    state.save(new_stacks, {})
    return labelled, unlabelled
