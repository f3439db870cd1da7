"""Discover DICOM files in any folder tree and read their headers (never their pixels).

Every file under the root is an input and gets exactly one outcome: it yields image frames
(:class:`~tl_med.ingest.header.Frame`), is skipped as a non-image object (with why), or is
quarantined (with why). Folders may nest freely, files need no extension, studies and series may
be mixed in one folder, and a DICOMDIR is recorded as skipped (the files themselves are read).

Reasons are one line and never echo attribute values from the file (they could be identifying).
"""

from __future__ import annotations

import hashlib
import warnings
from concurrent.futures import Executor
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from tl_med.ingest._sharing import shared_map
from tl_med.ingest.convert import file_sha256
from tl_med.ingest.header import Frame, frames_of
from tl_med.ingest.messages import safe_message
from tl_med.ingest.report import IngestReport
from tl_med.progress import activity

__all__ = ["scan_dicom_tree", "read_headers", "safe_message", "list_inputs"]

PARTIAL_PREFIX = ".partial-"  # a folder still being filled (a PACS pull): not an input yet


def list_inputs(root: Path) -> list[Path]:
    """Every file under ``root``, in a stable order (folders named ``.partial-*`` are skipped)."""
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and not any(part.startswith(PARTIAL_PREFIX) for part in p.relative_to(root).parts))


# files up to this size are read once into memory, hashed and parsed from there; larger ones
# (big multi-frame objects) are hashed and parsed from the file
_IN_MEMORY = 32 << 20


def read_headers(path: Path, rel: str) -> list[Frame] | str:
    """The frames in one file, or a ``skip:``/``quarantine:`` reason."""
    if path.name.upper() == "DICOMDIR":
        return "skip:DICOMDIR media index (the files it lists are read directly)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = path.read_bytes() if path.stat().st_size <= _IN_MEMORY else None

            def source() -> Path | BytesIO:
                return path if data is None else BytesIO(data)

            try:
                ds = pydicom.dcmread(source(), defer_size=1024)
            except InvalidDicomError:
                ds = _raw_dataset(source())
                if ds is None:
                    return "quarantine:not a DICOM file (no DICM prefix, no file meta, no dataset with a SOP Class UID)"
            if data is None:
                return frames_of(ds, path, rel, path.stat().st_size, file_sha256(path))
            return frames_of(ds, path, rel, len(data), hashlib.sha256(data).hexdigest())
    except EOFError as exc:
        return f"quarantine:file truncated inside the header ({safe_message(exc)})"
    except Exception as exc:  # noqa: BLE001 - any parse failure is a quarantine, never a crash
        return f"quarantine:unreadable DICOM header ({safe_message(exc)})"


def _raw_dataset(path: Path | BytesIO):
    """A dataset stored without preamble and file meta (as some exports and old tools write), read
    as dcm2niix and ``dcmread(force=True)`` do; ``None`` unless it parses into a dataset with a SOP
    Class UID. Its transfer syntax is the encoding pydicom found."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    try:
        ds = pydicom.dcmread(path, defer_size=1024, force=True)
        if not str(ds.get("SOPClassUID", "") or "").strip():
            return None
    except Exception:  # noqa: BLE001 - not parseable as a dataset: not DICOM
        return None
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}) and implicit is not None:
        meta = ds.file_meta if getattr(ds, "file_meta", None) is not None else FileMetaDataset()
        meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                  ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        ds.file_meta = meta
    return ds


def _read_many(items: list[tuple[Path, str]]) -> list[list[Frame] | str]:
    return [read_headers(p, r) for p, r in items]


def scan_dicom_tree(root: Path, report: IngestReport, rel_to: Path, *, pool: Executor | None = None,
                    files: list[Path] | None = None, segs: list[tuple[Path, str, str]] | None = None,
                    description: str = "") -> list[Frame]:
    """Read the header of every file under ``root`` (or of ``files``); record skips and
    quarantines in ``report`` and return the image frames. DICOM SEG objects go to ``segs`` as
    ``(path, rel, referenced series UID)`` for the caller to pair (recorded as skipped without it).

    With a process ``pool`` the headers are read in parallel (parsing is pure Python), this
    process reading some of them too.
    """
    paths = list_inputs(root) if files is None else files
    items = [(p, str(p.relative_to(rel_to))) for p in paths]
    with activity(f"scan:{report.site}:{root}", description or f"ingest {report.site}: read headers", total=len(items),
                  unit="files") as act:
        results: list[list[Frame] | str] = [""] * len(items)
        if pool is not None:
            # chunks of ~32 files (at most 64): this process reads some of them too (see shared_map)
            n = max(1, min(64, len(items) // 32))
            chunks = [items[i::n] for i in range(n)]
            for i, chunk_results in enumerate(shared_map(pool, _read_many, chunks,
                                                         lambda i: act.advance(len(chunks[i])))):
                results[i::n] = chunk_results
        else:
            for k, item in enumerate(items):
                results[k] = read_headers(*item)
                act.advance()
    frames: list[Frame] = []
    for (path, rel), result in zip(items, results):
        report.n_inputs += 1
        if isinstance(result, str) and result.startswith("seg:"):
            if segs is not None:  # its outcome is recorded when it is paired (or not) with its series
                segs.append((path, rel, result[4:]))
            else:
                report.record(rel, "skipped", "non-image object (Modality SEG, Segmentation Storage)")
        elif isinstance(result, str):
            kind, reason = result.split(":", 1)
            report.record(rel, "skipped" if kind == "skip" else "quarantined", reason)
        else:
            frames.extend(result)
    return frames
