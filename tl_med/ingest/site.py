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
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from tl_med.errors import InputError
from tl_med.ingest.classes import pair_classes, read_class_csv
from tl_med.ingest.convert import file_sha256, write_nifti
from tl_med.ingest.deid import case_id as make_case_id
from tl_med.ingest.geometry import group_series
from tl_med.ingest.header import Frame
from tl_med.ingest.incremental import IngestState, fingerprint
from tl_med.ingest.duplicates import drop_duplicates, split_repeats
from tl_med.ingest.labels import check_label, index_labels, label_key
from tl_med.ingest.report import IngestReport
from tl_med.ingest.scan import list_inputs, scan_dicom_tree
from tl_med.ingest.seg import seg_label
from tl_med.ingest.stacks import StackJob, StackOutcome, convert_stack
from tl_med.manifests import CaseEntry, SiteManifest, assign_splits, write_manifest
from tl_med.progress import track
from tl_med.quiet import silence_known_noise
from tl_med.sites import DEFAULT_LABELS, SiteConfig
from tl_med.workspace import Workspace

__all__ = ["IngestResult", "IngestPlan", "ingest_site", "plan_ingest", "convert_job", "finish_ingest",
           "LABEL_NAMES", "n_inputs", "worker_pool"]

LABEL_NAMES = DEFAULT_LABELS  # the default task's map; a sites.yaml may give its own (SitesConfig.labels)


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
    ctx.set_forkserver_preload(["tl_med.ingest.stacks", "tl_med.ingest.scan"])  # what the workers run
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=silence_known_noise) as pool:
        yield pool


def n_inputs(site: SiteConfig) -> int:
    """How many files a DICOM site's folder holds (0 for a datalist site or a missing folder)."""
    d = site.dicom_dir
    return len(list_inputs(d)) if d is not None and d.is_dir() else 0


def _check_inputs(site: SiteConfig) -> None:
    d = site.dicom_dir
    assert d is not None
    if not d.is_dir():
        raise InputError(f"site '{site.name}': DICOM folder {d} does not exist")
    if not any(p.is_file() for p in d.rglob("*")):
        raise InputError(f"site '{site.name}': DICOM folder {d} is empty")


def _jobs(frames: list[Frame], key: bytes, options: str) -> tuple[list[StackJob], dict[str, list[Frame]]]:
    stacks = [part for stack in group_series(frames).values() for part in split_repeats(stack)]
    per_series = Counter(f.series_uid for f in frames)
    jobs, members = [], {}
    for repeat, stack in stacks:
        first = stack[0]
        # a series split into several stacks (localizer, echoes, stacks, repeats) gets one case per stack
        suffix = "" if len(stack) == per_series[first.series_uid] \
            else f"/{first.iop}/{first.rows}x{first.cols}/{first.echo}/{first.stack}" + (f"/{repeat}" if repeat else "")
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
                 opts_cl: int, labels: dict[str, str],
                 read: Callable[..., np.ndarray | str] = check_label) -> dict[str, str] | None:
    """Check and write one label (a NIfTI mask, or a DICOM SEG with ``read=seg_label``); the
    manifest fields for it, or None (quarantined)."""
    cid = record["entry"]["case_id"]
    fp = fingerprint(record["entry"]["image_sha256"], file_sha256(label), sorted(labels))
    saved = state.reusable(state.labels, fp, ws.root, "out")
    if saved is None:
        affine = np.asarray(record["affine"])
        notes: list[str] = []
        checked = read(label, tuple(record["entry"]["shape"]), affine, allowed={int(k) for k in labels}, notes=notes)
        if isinstance(checked, str):
            report.record(label_rel, "quarantined", f"label for case {cid}: {checked}")
            return None
        lp, sha = write_nifti(checked, affine, site_out / "labels" / (f"{cid}.nii.gz" if opts_cl else f"{cid}.nii"),
                              compresslevel=opts_cl or 1)
        saved = {"out": str(lp.relative_to(ws.root)), "size": lp.stat().st_size, "sha256": sha, "note": "; ".join(notes)}
    new_labels[fp] = saved
    report.record(label_rel, "converted", saved.get("note", ""), case_id=cid)
    return {"label": str(Path("..") / saved["out"]), "label_sha256": saved["sha256"]}


@dataclass
class IngestPlan:
    """A site's ingest after the header scan: the stacks found and which of them need converting.

    Holds raw header facts (UIDs, paths) and the de-identification key: it lives in memory only,
    is never persisted and never leaves the process that made it (flows pass ``todo`` jobs to the
    conversion tasks, then hand the outcomes back to :func:`finish_ingest`).
    """

    site: SiteConfig
    ws: Workspace
    task: str
    key: bytes
    report: IngestReport
    state: IngestState
    jobs: list[StackJob]
    members: dict[str, list[Frame]]
    todo: list[StackJob]
    segs: list[tuple[Path, str, str]] = field(default_factory=list)  # (path, rel, referenced series UID)
    labels: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_LABELS))  # the task's label map
    channels: tuple[str, ...] = ()  # the task's input channels (datalist sites; () is one image)
    classes: tuple[str, ...] | None = None  # the task's case-level classes (None: classes_csv not read)


def _state(site: SiteConfig, ws: Workspace, key: bytes) -> IngestState:
    return IngestState.load(ws.data / site.name / "ingest-state.json",
                            fingerprint("key", make_case_id(key, "state"), site.ingest.result_hash()))


def plan_ingest(site: SiteConfig, ws: Workspace, *, task: str, key: bytes | None = None,
                pool: Executor | None = None, labels: dict[str, str] | None = None,
                channels: tuple[str, ...] = (), classes: tuple[str, ...] | None = None) -> IngestPlan:
    """Read every header of a DICOM site and group the frames into stacks; stacks whose inputs and
    options are unchanged since the last run are reused (not in ``todo``). A datalist site has no
    stacks: :func:`finish_ingest` ingests it whole. Headers are read in ``pool`` when given
    (see :func:`worker_pool`). ``labels``, ``channels`` and ``classes`` are the task's (``sites.yaml``;
    :meth:`~tl_med.sites.SitesConfig.task_fields`); without ``classes`` a site's ``classes_csv`` is not read."""
    key = key if key is not None else ws.deid_key()
    report = IngestReport(site=site.name, key=key)
    state = _state(site, ws, key)
    task_fields = {"labels": dict(labels or DEFAULT_LABELS), "channels": tuple(channels),
                   "classes": None if classes is None else tuple(classes)}
    if site.datalist is not None:
        return IngestPlan(site, ws, task, key, report, state, [], {}, [], **task_fields)
    _check_inputs(site)
    assert site.dicom_dir is not None
    files = list_inputs(site.dicom_dir)
    segs: list[tuple[Path, str, str]] = []
    frames = scan_dicom_tree(site.dicom_dir, report, rel_to=site.dicom_dir.parent, pool=pool, files=files, segs=segs)
    frames = drop_duplicates(frames, report)
    jobs, members = _jobs(frames, key, state.options)
    todo = [j for j in jobs if state.reusable(state.stacks, j.fingerprint, ws.root, "out") is None]
    report.stacks_converted, report.stacks_reused = len(todo), len(jobs) - len(todo)
    return IngestPlan(site, ws, task, key, report, state, jobs, members, todo, segs, **task_fields)


def convert_job(site: SiteConfig, ws: Workspace, job: StackJob, key: bytes | None = None) -> StackOutcome:
    """Convert one stack of a plan (what a flow maps over); the same function the pool runs."""
    return convert_stack(job, out=ws.data / site.name, root=ws.root, opts=site.ingest,
                         key=key if key is not None else ws.deid_key())


def _segs_by_series(plan: IngestPlan) -> dict[str, tuple[Path, str, str]]:
    """The SEG of each referenced series; a second SEG for a series is quarantined."""
    found: dict[str, tuple[Path, str, str]] = {}
    for seg in sorted(plan.segs, key=lambda s: s[1]):
        if seg[2] in found:
            plan.report.record(seg[1], "quarantined", "a second DICOM SEG for the same series (ambiguous label)")
        else:
            found[seg[2]] = seg
    return found


def _label_rel(path: Path, site: SiteConfig) -> str:
    """How the report names a label file: relative to the DICOM folder's parent when it lies
    there (``labels/<file>`` beside ``dicom/``), else relative to its own labels folder (an
    annotation folder kept apart from the PACS export)."""
    assert site.dicom_dir is not None
    if path.is_relative_to(site.dicom_dir.parent):
        return str(path.relative_to(site.dicom_dir.parent))
    if site.labels_dir is not None and path.is_relative_to(site.labels_dir):
        return str(Path(site.labels_dir.name) / path.relative_to(site.labels_dir))
    return path.name


def _with_classes(plan: IngestPlan, labelled: list[CaseEntry], unlabelled: list[CaseEntry]
                  ) -> tuple[list[CaseEntry], list[CaseEntry]]:
    """The entries with the case-level class the site's class CSV gives them."""
    site = plan.site
    assert site.classes_csv is not None
    rel = _label_rel(site.classes_csv, site)
    rows = read_class_csv(site.classes_csv, rel, plan.report)
    firsts = {e.case_id: plan.members[e.case_id][0] for e in (*labelled, *unlabelled)}
    keys = [(cid, (f.series_uid, f.study_uid, f.accession)) for cid, f in firsts.items()]
    found = pair_classes(rows, rel, plan.classes, keys, plan.report)

    def classed(entries: list[CaseEntry]) -> list[CaseEntry]:
        return [e.model_copy(update={"case_class": found[e.case_id]}) if e.case_id in found else e for e in entries]

    return classed(labelled), classed(unlabelled)


def _assemble_dicom(plan: IngestPlan, done: dict[str, StackOutcome]) -> tuple[list[CaseEntry], list[CaseEntry]]:
    site, ws, report, state = plan.site, plan.ws, plan.report, plan.state
    assert site.dicom_dir is not None
    out, opts = ws.data / site.name, site.ingest
    labelled: list[CaseEntry] = []
    unlabelled: list[CaseEntry] = []
    new_stacks: dict[str, dict[str, Any]] = {}
    new_labels: dict[str, dict[str, Any]] = {}
    labels = index_labels(site.labels_dir) if site.labels_dir else {}
    by_key = {label_key(p): p for p in labels.values() if label_key(p)}
    used: set[Path] = set()
    segs = _segs_by_series(plan)
    for job in sorted(plan.jobs, key=lambda j: j.cid):
        outcome = done.get(job.cid) or StackOutcome(job.cid, record=state.stacks[job.fingerprint])
        rels = sorted({f.rel for f in plan.members[job.cid]})
        if outcome.reason:
            for rel in rels:
                report.record(rel, "quarantined", outcome.reason)
            continue
        new_stacks[job.fingerprint] = outcome.record
        for rel in rels:
            report.record(rel, "converted", case_id=job.cid)
        entry = dict(outcome.record["entry"])
        label = _label_for(plan.members[job.cid], by_key)
        seg = segs.pop(plan.members[job.cid][0].series_uid, None)
        fields = None
        if label is not None:
            used.add(label)
            report.n_inputs += 1
            fields = _label_entry(label, outcome.record, out, ws, report, _label_rel(label, site),
                                  state, new_labels, opts.compresslevel, plan.labels)
            if seg is not None:
                report.record(seg[1], "skipped", f"DICOM SEG for case {job.cid} not used: a NIfTI label "
                                                 "in labels_dir takes precedence")
        elif seg is not None:
            fields = _label_entry(seg[0], outcome.record, out, ws, report, seg[1], state, new_labels,
                                  opts.compresslevel, plan.labels, read=seg_label)
        if fields is not None:
            labelled.append(CaseEntry(**entry, **fields))
            continue
        unlabelled.append(CaseEntry(**entry))
    if site.classes_csv is not None and plan.classes is not None:
        labelled, unlabelled = _with_classes(plan, labelled, unlabelled)
    for _, rel, _ in segs.values():
        report.record(rel, "quarantined", "DICOM SEG references no ingested series")
    for path in labels.values():
        if path not in used:
            report.n_inputs += 1
            reason = ("not a NIfTI file (.nii or .nii.gz)" if not label_key(path)
                      else "label matches no ingested series (by SeriesInstanceUID, StudyInstanceUID "
                           "or AccessionNumber)")
            report.record(_label_rel(path, site), "quarantined", reason)
    state.save(new_stacks, new_labels)
    return labelled, unlabelled


def finish_ingest(plan: IngestPlan, outcomes: Iterable[StackOutcome]) -> IngestResult:
    """Pair labels, record every input's outcome, write the manifest, report and ingest state."""
    site, ws = plan.site, plan.ws
    if site.datalist is not None:
        from tl_med.ingest.nifti_site import ingest_datalist

        labelled, unlabelled = ingest_datalist(site, ws, plan.key, plan.report, plan.state, plan.labels,
                                               plan.channels, plan.classes)
    else:
        done = {o.cid: o for o in outcomes}
        missing = {j.cid for j in plan.todo} - set(done)
        if missing:
            raise ValueError(f"{len(missing)} planned stacks of site '{site.name}' have no outcome")
        labelled, unlabelled = _assemble_dicom(plan, done)
    splits = assign_splits(labelled, site.split.n_train, site.split.n_val)
    modality = sorted({c.modality for c in labelled + unlabelled}) or ["?"]
    # decathlon convention: the modality of each input channel (a multi-channel task names its sequences)
    channels = dict(enumerate(plan.channels)) if len(plan.channels) > 1 else {0: "/".join(modality)}
    manifest = SiteManifest(
        name=site.name, task=plan.task, modality={str(k): v for k, v in channels.items()}, labels=plan.labels,
        classes=plan.classes or (),
        numTraining=len(splits["training"]), numTest=len(splits["test"]),
        unlabelled=tuple(sorted(unlabelled, key=lambda c: c.case_id)), **splits,
    )
    manifest_path = write_manifest(manifest, ws.site_manifest(site.name))
    report_path = plan.report.write(ws.reports / site.name / "ingest-report.json")
    return IngestResult(site=site.name, manifest_path=manifest_path, report_path=report_path,
                        report=plan.report, n_labelled=len(labelled), n_unlabelled=len(unlabelled))


def ingest_site(site: SiteConfig, ws: Workspace, *, task: str, key: bytes | None = None,
                labels: dict[str, str] | None = None, channels: tuple[str, ...] = (),
                classes: tuple[str, ...] | None = None) -> IngestResult:
    """Convert every series (or NIfTI pair) of ``site``; write its manifest and report.

    Bad files and series are quarantined with a reason and the rest of the site ingests; the
    report reconciles inputs = converted + skipped + quarantined. Stacks whose input files and
    options are unchanged since the last run are reused, not converted again. The header scan and
    the conversions share one process pool (``ingest.workers``).
    """
    key = key if key is not None else ws.deid_key()
    with worker_pool(site.ingest.n_workers(), n_inputs(site)) as pool:
        plan = plan_ingest(site, ws, task=task, key=key, pool=pool, labels=labels, channels=channels, classes=classes)
        convert = partial(convert_job, site, ws, key=key)
        outcomes = list(track(pool.map(convert, plan.todo) if pool else map(convert, plan.todo),
                              f"convert:{site.name}", f"ingest {site.name}: convert series", total=len(plan.todo),
                              unit="series"))
    return finish_ingest(plan, outcomes)
