"""Ingest one site: DICOM tree (or NIfTI datalist) + labels → de-identified NIfTI, manifest, report.

Example:
    >>> # result = ingest_site(sites.get("east"), workspace, task="liver")
    >>> # result.report.summary()["reconciled"]  -> True
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from tl_med.errors import InputError
from tl_med.ingest.convert import file_sha256, write_nifti
from tl_med.ingest.deid import case_id as make_case_id
from tl_med.ingest.geometry import group_series
from tl_med.ingest.header import Frame
from tl_med.ingest.incremental import IngestState, fingerprint
from tl_med.ingest.labels import check_label, index_labels, label_key
from tl_med.ingest.report import IngestReport
from tl_med.ingest.scan import list_inputs, scan_dicom_tree
from tl_med.ingest.stacks import StackJob, StackOutcome, convert_stack, nifti_name
from tl_med.manifests import CaseEntry, SiteManifest, assign_splits, write_manifest
from tl_med.sites import SiteConfig
from tl_med.workspace import Workspace

__all__ = ["IngestResult", "ingest_site", "LABEL_NAMES", "worker_pool"]

LABEL_NAMES = {"0": "background", "1": "liver"}


@dataclass(frozen=True)
class IngestResult:
    site: str
    manifest_path: Path
    report_path: Path
    report: IngestReport
    n_labelled: int
    n_unlabelled: int


@contextmanager
def worker_pool(n: int, n_items: int) -> Iterator[Executor | None]:
    """A process pool of ``n`` workers (forkserver: safe beside Prefect's and torch's threads), or
    ``None`` when one process is enough."""
    if n <= 1 or n_items <= 64:
        yield None
        return
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tl_med.ingest.stacks"])
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        yield pool


def _check_inputs(site: SiteConfig) -> None:
    d = site.dicom_dir
    assert d is not None
    if not d.is_dir():
        raise InputError(f"site '{site.name}': DICOM folder {d} does not exist")
    if not any(p.is_file() for p in d.rglob("*")):
        raise InputError(f"site '{site.name}': DICOM folder {d} is empty")


def _jobs(frames: list[Frame], key: bytes, options: str) -> tuple[list[StackJob], dict[str, list[Frame]]]:
    stacks = list(group_series(frames).values())
    per_series = Counter(f.series_uid for f in frames)
    jobs, members = [], {}
    for stack in stacks:
        first = stack[0]
        # a series split into several stacks (localizer, echoes, stacks) gets one case per stack
        suffix = "" if len(stack) == per_series[first.series_uid] \
            else f"/{first.iop}/{first.rows}x{first.cols}/{first.echo}/{first.stack}"
        cid = make_case_id(key, first.series_uid + suffix)
        fp = fingerprint(options, sorted((f.file_sha256, f.index or 0) for f in stack))
        jobs.append(StackJob(cid=cid, frames=tuple(stack), fingerprint=fp))
        members[cid] = stack
    return jobs, members


def _label_for(stack: list[Frame], by_key: dict[str, Path]) -> Path | None:
    first = stack[0]
    return next((by_key[k] for k in (first.series_uid, first.study_uid, first.accession) if k and k in by_key),
                None)


def _label_entry(label: Path, record: dict[str, Any], site_out: Path, ws: Workspace, report: IngestReport,
                 label_rel: str, state: IngestState, new_labels: dict[str, dict[str, Any]],
                 opts_cl: int) -> dict[str, str] | None:
    """Check and write one label; the manifest fields for it, or None (quarantined)."""
    cid = record["entry"]["case_id"]
    fp = fingerprint(record["entry"]["image_sha256"], file_sha256(label))
    saved = state.reusable(state.labels, fp, ws.root, "out")
    if saved is None:
        affine = np.asarray(record["affine"])
        checked = check_label(label, tuple(record["entry"]["shape"]), affine,
                              allowed={int(k) for k in LABEL_NAMES})
        if isinstance(checked, str):
            report.record(label_rel, "quarantined", f"label for case {cid}: {checked}")
            return None
        lp, sha = write_nifti(checked, affine, site_out / "labels" / (f"{cid}.nii.gz" if opts_cl else f"{cid}.nii"),
                              compresslevel=opts_cl or 1)
        saved = {"out": str(lp.relative_to(ws.root)), "size": lp.stat().st_size, "sha256": sha}
    new_labels[fp] = saved
    report.record(label_rel, "converted", case_id=cid)
    return {"label": str(Path("..") / saved["out"]), "label_sha256": saved["sha256"]}


def _ingest_dicom(site: SiteConfig, ws: Workspace, key: bytes, report: IngestReport,
                  state: IngestState) -> tuple[list[CaseEntry], list[CaseEntry]]:
    _check_inputs(site)
    assert site.dicom_dir is not None
    opts = site.ingest
    out = ws.data / site.name
    input_root = site.dicom_dir.parent
    files = list_inputs(site.dicom_dir)
    labelled: list[CaseEntry] = []
    unlabelled: list[CaseEntry] = []
    new_stacks: dict[str, dict[str, Any]] = {}
    new_labels: dict[str, dict[str, Any]] = {}
    with worker_pool(opts.n_workers(), len(files)) as pool:
        frames = scan_dicom_tree(site.dicom_dir, report, rel_to=input_root, pool=pool, files=files)
        jobs, members = _jobs(frames, key, state.options)
        todo = [j for j in jobs if state.reusable(state.stacks, j.fingerprint, ws.root, "out") is None]
        convert = partial(convert_stack, out=out, root=ws.root, opts=opts, key=key)
        done = {o.cid: o for o in (pool.map(convert, todo) if pool else map(convert, todo))}
    report.stacks_converted, report.stacks_reused = len(todo), len(jobs) - len(todo)
    labels = index_labels(site.labels_dir) if site.labels_dir else {}
    by_key = {label_key(p): p for p in labels.values() if label_key(p)}
    used: set[Path] = set()
    for job in sorted(jobs, key=lambda j: j.cid):
        outcome = done.get(job.cid) or StackOutcome(job.cid, record=state.stacks[job.fingerprint])
        rels = sorted({f.rel for f in members[job.cid]})
        if outcome.reason:
            for rel in rels:
                report.record(rel, "quarantined", outcome.reason)
            continue
        new_stacks[job.fingerprint] = outcome.record
        for rel in rels:
            report.record(rel, "converted", case_id=job.cid)
        entry = dict(outcome.record["entry"])
        label = _label_for(members[job.cid], by_key)
        if label is not None:
            used.add(label)
            report.n_inputs += 1
            fields = _label_entry(label, outcome.record, out, ws, report, str(label.relative_to(input_root)),
                                  state, new_labels, opts.compresslevel)
            if fields is not None:
                labelled.append(CaseEntry(**entry, **fields))
                continue
        unlabelled.append(CaseEntry(**entry))
    for path in labels.values():
        if path not in used:
            report.n_inputs += 1
            reason = ("not a NIfTI file (.nii or .nii.gz)" if not label_key(path)
                      else "label matches no ingested series (by SeriesInstanceUID, StudyInstanceUID "
                           "or AccessionNumber)")
            report.record(str(path.relative_to(input_root)), "quarantined", reason)
    state.save(new_stacks, new_labels)
    return labelled, unlabelled


def ingest_site(site: SiteConfig, ws: Workspace, *, task: str, key: bytes | None = None) -> IngestResult:
    """Convert every series (or NIfTI pair) of ``site``; write its manifest and report.

    Bad files and series are quarantined with a reason and the rest of the site ingests; the
    report reconciles inputs = converted + skipped + quarantined. Stacks whose input files and
    options are unchanged since the last run are reused, not converted again.
    """
    key = key if key is not None else ws.deid_key()
    report = IngestReport(site=site.name, key=key)
    state = IngestState.load(ws.data / site.name / "ingest-state.json",
                             fingerprint("key", make_case_id(key, "state"), site.ingest.result_hash()))
    if site.datalist is not None:
        from tl_med.ingest.nifti_site import ingest_datalist

        labelled, unlabelled = ingest_datalist(site, ws, key, report, state, LABEL_NAMES)
    else:
        labelled, unlabelled = _ingest_dicom(site, ws, key, report, state)
    splits = assign_splits(labelled, site.split.n_train, site.split.n_val)
    modality = sorted({c.modality for c in labelled + unlabelled}) or ["?"]
    manifest = SiteManifest(
        name=site.name, task=task, modality={"0": "/".join(modality)}, labels=LABEL_NAMES,
        numTraining=len(splits["training"]), numTest=len(splits["test"]),
        unlabelled=tuple(sorted(unlabelled, key=lambda c: c.case_id)), **splits,
    )
    manifest_path = write_manifest(manifest, ws.site_manifest(site.name))
    report_path = report.write(ws.reports / site.name / "ingest-report.json")
    return IngestResult(site=site.name, manifest_path=manifest_path, report_path=report_path,
                        report=report, n_labelled=len(labelled), n_unlabelled=len(unlabelled))
