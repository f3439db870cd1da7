"""Copies of one image, and distinct images at one position: lose nothing valid.

A PACS export or a re-pull often holds the same instance more than once (the same SOP Instance
UID as several files, perhaps in other transfer syntaxes). :func:`drop_duplicates` keeps one copy
of each instance, preferring one whose pixels can be read without decoding, and records every
other copy as skipped (``duplicate of <ref>``) when its decoded pixels, rescale and position are
the same. Copies that share a SOP Instance UID but differ are all quarantined: which one is right
cannot be told.

Distinct instances that share slice positions within one series (a repeated acquisition, the
time points of a dynamic series) are split by :func:`split_repeats` when a header tells them
apart (:data:`~tl_med.ingest.header.REPEAT_KEYS`); otherwise the series is refused as before.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from tl_med.ingest.convert import read_plane
from tl_med.ingest.header import REPEAT_KEYS, Frame
from tl_med.ingest.report import IngestReport

__all__ = ["drop_duplicates", "split_repeats"]


def _content(frames: list[Frame]) -> list[tuple] | None:
    """What makes a file's image: each frame's stored pixels, rescale and geometry (None: unreadable)."""
    cache: dict[Path, np.ndarray] = {}
    try:
        planes = [read_plane(f, cache) for f in frames]
        return [(plane.tobytes(), str(plane.dtype), f.slope, f.intercept, f.ipp, f.iop, f.pixel_spacing, f.index)
                for plane, f in zip(planes, frames)]
    except Exception:  # noqa: BLE001 - an unreadable copy is left to the conversion, which quarantines it
        return None


def drop_duplicates(frames: list[Frame], report: IngestReport) -> list[Frame]:
    """``frames`` without the extra copies of an instance; each dropped file is recorded in ``report``."""
    by_file: dict[Path, list[Frame]] = defaultdict(list)
    for f in frames:
        by_file[f.path].append(f)
    instances: dict[str, list[Path]] = defaultdict(list)
    for path, fs in by_file.items():
        instances[fs[0].sop_uid or f"sha256:{fs[0].file_sha256}"].append(path)
    dropped: set[Path] = set()
    for paths in instances.values():
        if len(paths) < 2:
            continue
        # keep a copy whose pixels are read straight from the file, then the first by name
        ordered = sorted(paths, key=lambda p: (by_file[p][0].native is None, by_file[p][0].rel))
        kept = ordered[0]
        ref = report.ref(by_file[kept][0].rel)
        reference = _content(by_file[kept])
        if reference is None:
            continue
        same, different = [], []
        for other in ordered[1:]:
            identical = by_file[other][0].file_sha256 == by_file[kept][0].file_sha256 and by_file[kept][0].file_sha256
            (same if identical or _content(by_file[other]) == reference else different).append(other)
        if different:
            for path in ordered:
                report.record(by_file[path][0].rel, "quarantined",
                              f"SOP Instance UID shared by {len(ordered)} files whose pixel data or geometry differ "
                              f"(with {ref}): which copy is right cannot be told")
            dropped.update(ordered)
            continue
        for other in same:
            report.record(by_file[other][0].rel, "skipped",
                          f"duplicate of {ref} (same SOP Instance UID, pixel data and geometry)")
        dropped.update(same)
    return [f for f in frames if f.path not in dropped]


def split_repeats(stack: list[Frame]) -> list[tuple[str, list[Frame]]]:
    """``[("", stack)]``, or the stack split into ``(label, frames)`` parts by the first header of
    :data:`REPEAT_KEYS` that gives every part distinct slice positions (when positions repeat)."""
    def positions_unique(frames: list[Frame]) -> bool:
        keys = [tuple(round(v, 3) for v in f.ipp) for f in frames]
        return len(set(keys)) == len(keys)

    if positions_unique(stack):
        return [("", stack)]
    for name in REPEAT_KEYS:
        parts: dict[str, list[Frame]] = defaultdict(list)
        for f in stack:
            parts[dict(f.repeat).get(name, "") if f.repeat else ""].append(f)
        if len(parts) > 1 and "" not in parts and all(positions_unique(p) for p in parts.values()):
            return [(f"{name}={value}", parts[value]) for value in sorted(parts)]
    return [("", stack)]
