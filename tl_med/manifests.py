"""Per-site data manifests: a MONAI decathlon datalist plus de-identified provenance.

Schema (``tl_med.manifest/1``), one JSON file per site::

    {
      "schema": "tl_med.manifest/1",
      "name": "east", "task": "liver",
      "modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver"},
      "numTraining": 4, "numTest": 12,
      "training":   [{"image": "<path>", "label": "<path>", "case_id": "c…", ...provenance}],
      "validation": [...], "test": [...],
      "unlabelled": [{"image": "<path>", "case_id": "c…", ...}]
    }

Paths are relative to the manifest's folder, so ``monai.data.load_decathlon_datalist`` reads the
file directly. Each case also carries ``image_sha256``/``label_sha256`` (of the converted files),
``shape``, ``spacing`` (mm), ``orientation`` (axis codes), ``modality``, ``manufacturer``,
``model`` and ``acquisition`` (kVp, kernel, field strength, TR/TE, slice thickness, contrast
yes/no): the facts that explain domain shift; ``source`` (``dicom`` or ``nifti``) and, when the
site's geometry policy is ``resample``, ``resampled`` (what was wrong and what was done), and
``case_class`` when the task has case-level ``classes`` (listed in the manifest). No name, ID,
date, UID or free text is ever written here.
The manifest hash (:func:`manifest_hash`) identifies the data of every run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from tl_med.config import FrozenModel
from tl_med.errors import InputError

__all__ = ["CaseEntry", "SiteManifest", "SCHEMA", "manifest_hash", "load_manifest",
           "write_manifest", "assign_splits", "datalist", "all_items"]

SCHEMA = "tl_med.manifest/1"
SPLITS = ("training", "validation", "test")


class CaseEntry(FrozenModel):

    image: str
    label: str | None = None
    case_id: str
    image_sha256: str
    label_sha256: str | None = None
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    orientation: str
    modality: str
    manufacturer: str = ""
    model: str = ""
    acquisition: dict[str, str] = {}
    source: Literal["dicom", "nifti"] = "dicom"
    resampled: str | None = None
    case_class: str | None = None  # the case-level class (one of the manifest's classes), when given


class SiteManifest(FrozenModel):

    schema_: str = SCHEMA
    name: str
    task: str
    modality: dict[str, str]
    labels: dict[str, str]
    classes: tuple[str, ...] = ()  # the task's case-level classes, in index order
    numTraining: int
    numTest: int
    training: tuple[CaseEntry, ...]
    validation: tuple[CaseEntry, ...]
    test: tuple[CaseEntry, ...]
    unlabelled: tuple[CaseEntry, ...] = ()

    def to_json(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        if not data.get("classes"):
            data.pop("classes", None)  # a segmentation-only task's manifest stays as it was
        data = {"schema": data.pop("schema_"), **data}
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @property
    def n_labelled(self) -> int:
        return len(self.training) + len(self.validation) + len(self.test)


def assign_splits(labelled: list[CaseEntry], n_train: int, n_val: int) -> dict[str, tuple[CaseEntry, ...]]:
    """Deterministic split: labelled cases in the order of their image's content hash; first
    ``n_train`` train, next ``n_val`` validation, the rest test.

    The order is pseudo-random, depends only on the data (not on the workspace's secret key), and
    so the same inputs give the same splits, and the same results, in any workspace."""
    ordered = sorted(labelled, key=lambda c: (c.image_sha256, c.case_id))
    return {"training": tuple(ordered[:n_train]),
            "validation": tuple(ordered[n_train:n_train + n_val]),
            "test": tuple(ordered[n_train + n_val:])}


def write_manifest(manifest: SiteManifest, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(manifest.to_json())
    os.replace(tmp, path)
    return path


def load_manifest(path: Path) -> SiteManifest:
    """Read and validate a manifest; problems raise :class:`InputError` naming the file."""
    if not path.is_file():
        raise InputError(f"{path}: no manifest (run ingest for this site first)")
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
        if raw.get("schema") != SCHEMA:
            raise InputError(f"{path}: unknown manifest schema {raw.get('schema')!r} (expected {SCHEMA})")
        raw["schema_"] = raw.pop("schema")
        return SiteManifest.model_validate(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(f"{path}: field '{'.'.join(map(str, err['loc']))}': {err['msg']}") from None


def manifest_hash(path: Path) -> str:
    """sha256 of the manifest file's bytes (the file is written canonically)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def datalist(manifest_path: Path, split: str, limit: int | None = None) -> list[dict[str, str]]:
    """Absolute ``{image, label, case_id, content}`` dicts of one split, MONAI-ready (and
    ``class``, the index of the case's class in the manifest's ``classes``, when it has one).

    ``content`` (the image and label sha256) is part of each item so that on-disk caches keyed
    on the item are invalidated when the content changes. (Keys named ``image_*`` would be taken
    for metadata dictionaries by MONAI's dictionary transforms.)
    """
    manifest = load_manifest(manifest_path)
    base = manifest_path.parent
    cases = getattr(manifest, split)
    items = []
    for c in cases[:limit] if limit is not None else cases:
        item = {"image": str((base / c.image).resolve()), "case_id": c.case_id,
                "content": f"{c.image_sha256}:{c.label_sha256 or ''}"}
        if c.label is not None:
            item["label"] = str((base / c.label).resolve())
        if c.case_class is not None and c.case_class in manifest.classes:
            item["class"] = manifest.classes.index(c.case_class)
        items.append(item)
    return items


def all_items(manifest_path: Path) -> list[dict[str, str]]:
    """The :func:`datalist` items of every split and the unlabelled cases (what preprocessing caches)."""
    return [it for split in (*SPLITS, "unlabelled") for it in datalist(manifest_path, split)]
