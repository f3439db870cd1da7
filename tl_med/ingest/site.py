"""Ingest one site: DICOM tree + label folder → de-identified NIfTI, manifest and report.

Example:
    >>> # result = ingest_site(sites.get("east"), workspace, task="liver")
    >>> # result.report.summary()["reconciled"]  -> True
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tl_med.errors import InputError
from tl_med.ingest.convert import file_sha256, read_volume, write_nifti
from tl_med.ingest.deid import case_id as make_case_id
from tl_med.ingest.geometry import SeriesGeometry, build_geometry, group_series, orientation_code
from tl_med.ingest.labels import check_label, index_labels, label_key
from tl_med.ingest.report import IngestReport
from tl_med.ingest.scan import scan_dicom_tree
from tl_med.manifests import CaseEntry, SiteManifest, assign_splits, write_manifest
from tl_med.sites import SiteConfig
from tl_med.workspace import Workspace

__all__ = ["IngestResult", "ingest_site", "LABEL_NAMES"]

LABEL_NAMES = {"0": "background", "1": "liver"}


@dataclass(frozen=True)
class IngestResult:
    site: str
    manifest_path: Path
    report_path: Path
    report: IngestReport
    n_labelled: int
    n_unlabelled: int


def _check_inputs(site: SiteConfig) -> None:
    d = site.dicom_dir
    if not d.is_dir():
        raise InputError(f"site '{site.name}': DICOM folder {d} does not exist")
    if not any(p.is_file() for p in d.rglob("*")):
        raise InputError(f"site '{site.name}': DICOM folder {d} is empty")


def _convert(geom: SeriesGeometry, cid: str, out: Path) -> tuple[Path, tuple[int, ...]]:
    vol = read_volume(geom)
    path = write_nifti(vol, geom.affine, out / "images" / f"{cid}.nii.gz")
    return path, tuple(vol.shape)


def ingest_site(site: SiteConfig, ws: Workspace, *, task: str, key: bytes | None = None) -> IngestResult:
    """Convert every series of ``site`` and write its manifest and report into the workspace.

    Bad files and series are quarantined with a reason and the rest of the site ingests; the
    report reconciles inputs = converted + skipped + quarantined.
    """
    _check_inputs(site)
    key = key if key is not None else ws.deid_key()
    out = ws.data / site.name
    report = IngestReport(site=site.name, key=key)
    input_root = site.dicom_dir.parent
    slices = scan_dicom_tree(site.dicom_dir, report, rel_to=input_root)
    labels = index_labels(site.labels_dir)
    by_key = {label_key(p): p for p in labels.values() if label_key(p)}
    used_labels: set[Path] = set()
    labelled: list[CaseEntry] = []
    unlabelled: list[CaseEntry] = []
    per_series = Counter(s.series_uid for s in slices)
    for stack in group_series(slices).values():
        rels = [s.rel for s in stack]
        geom = build_geometry(stack)
        if isinstance(geom, str):
            for rel in rels:
                report.record(rel, "quarantined", f"series rejected: {geom}")
            continue
        first = geom.slices[0]
        # a series split into several stacks (localizer, echoes) gets one case per stack
        suffix = "" if len(stack) == per_series[first.series_uid] \
            else f"/{first.iop}/{first.rows}x{first.cols}/{first.echo}"
        cid = make_case_id(key, first.series_uid + suffix)
        try:
            image_path, shape = _convert(geom, cid, out)
        except Exception as exc:  # noqa: BLE001 - pixel problems quarantine the series
            for rel in rels:
                report.record(rel, "quarantined", f"series pixel data unusable ({type(exc).__name__}: "
                                                  f"{str(exc).splitlines()[0][:120] if str(exc) else ''})")
            continue
        for rel in rels:
            report.record(rel, "converted", case_id=cid)
        entry = dict(
            image=str(Path("..") / image_path.relative_to(ws.root)), case_id=cid,
            image_sha256=file_sha256(image_path), shape=shape,
            spacing=tuple(round(v, 4) for v in geom.spacing), orientation=orientation_code(geom.affine),
            modality=first.modality, manufacturer=first.manufacturer, model=first.model,
            acquisition=dict(first.acquisition),
        )
        label_path = next((by_key[k] for k in (first.series_uid, first.study_uid, first.accession)
                           if k and k in by_key), None)
        if label_path is not None:
            used_labels.add(label_path)
            label_rel = str(label_path.relative_to(input_root))
            report.n_inputs += 1
            checked = check_label(label_path, shape, geom.affine, allowed={int(k) for k in LABEL_NAMES})
            if isinstance(checked, str):
                report.record(label_rel, "quarantined", f"label for case {cid}: {checked}")
            else:
                lp = write_nifti(checked, geom.affine, out / "labels" / f"{cid}.nii.gz")
                report.record(label_rel, "converted", case_id=cid)
                entry.update(label=str(Path("..") / lp.relative_to(ws.root)), label_sha256=file_sha256(lp))
                labelled.append(CaseEntry(**entry))
                continue
        unlabelled.append(CaseEntry(**entry))
    for path in labels.values():
        if path not in used_labels:
            report.n_inputs += 1
            reason = ("not a NIfTI file (.nii or .nii.gz)" if not label_key(path)
                      else "label matches no ingested series (by SeriesInstanceUID, StudyInstanceUID "
                           "or AccessionNumber)")
            report.record(str(path.relative_to(input_root)), "quarantined", reason)
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
