"""Applying an approved model: predict (NIfTI / DICOM / PACS studies → masks and DICOM SEG), export
(a MONAI bundle)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from tl_med.cli.common import REPO_SITES, JsonOpt, WorkspaceOpt, app, console
from tl_med.cli.output import emit_json, err, progress_view
from tl_med.errors import InputError, TlMedError
from tl_med.workspace import resolve_workspace

PACS_PREFIX = "pacs:"

ModelOpt = Annotated[Optional[str], typer.Option("--model", help="A models:/<name>@<alias> or models:/<name>/<version> "
                     "URI, a runs:/ URI or a model package folder (default: the site's champion).")]
TaskOpt = Annotated[Optional[str], typer.Option("--task", help="The task of the site's registered model (default: the "
                    "one registered model named tlmed-<task>-<site>).")]


def _tracker(workspace: Path | None):
    from tl_med.tracking import Tracker

    ws = resolve_workspace(workspace)
    if ws.uses_embedded_mlflow and not ws.mlflow_db.exists():
        raise TlMedError(f"no MLflow store at {ws.mlflow_db} (set MLFLOW_TRACKING_URI, or give --model <package folder>)")
    return Tracker(ws.tracking_uri, "tlmed-predict")


def _model(model: str | None, site: str, task: str | None, workspace: Path | None, dst: Path):
    """(network, spec, readable name) of the model to apply."""
    from tl_med.models.spec import load_package
    from tl_med.predict.models import resolve_model, site_task

    if model and Path(model).is_dir():
        net, spec = load_package(Path(model))
        return net, spec, Path(model).name
    tracker = _tracker(workspace)
    folder, label = resolve_model(model, site=site, task=task or site_task(tracker, site), tracker=tracker, dst=dst)
    net, spec = load_package(folder)
    return net, spec, label


def _pacs_inputs(refs: list[str], site: str, sites: Path, workspace: Path | None, dst: Path):
    """Download the PACS studies named ``pacs:<StudyInstanceUID>`` into ``dst`` (one folder each)."""
    from tl_med.pacs.orthanc import OrthancClient

    source = _site_pacs(site, sites, workspace)
    folders = []
    with OrthancClient.for_source(source) as client:
        for k, ref in enumerate(refs):
            study = client.lookup_study(ref.removeprefix(PACS_PREFIX))
            client.download_study(study, dst / f"pacs-study-{k + 1}")
            folders.append(dst / f"pacs-study-{k + 1}")
    return folders, source


def _store(outcomes, pacs) -> int:
    """Store each SEG whose study is in the PACS (a SEG of a local series from elsewhere would
    create a patient or study there); the others are named on stderr."""
    import pydicom

    from tl_med.pacs.orthanc import OrthancClient

    stored = 0
    with OrthancClient.for_source(pacs) as client:
        for o in outcomes:
            if o.seg is None:
                continue
            if client.find_study(pydicom.dcmread(o.seg, stop_before_pixels=True).StudyInstanceUID) is None:
                err.print(f"note: {o.name}: SEG not stored: its study is not in the site's PACS", markup=False)
                continue
            client.store(o.seg.read_bytes())
            stored += 1
    return stored


@app.command()
def predict(inputs: Annotated[list[str], typer.Argument(help="NIfTI files, DICOM files or series folders, or "
                                                        "pacs:<StudyInstanceUID> (a study in the site's PACS).")],
            site: Annotated[str, typer.Option("--site", help="Whose model to apply.")],
            out: Annotated[Path, typer.Option("--out", help="Folder for <name>.nii.gz and <name>.seg.dcm.")],
            model: ModelOpt = None, task: TaskOpt = None,
            force: Annotated[bool, typer.Option("--force", help="Apply the model to another modality than the "
                                                "one it was trained on.")] = False,
            store: Annotated[bool, typer.Option("--store", help="Store each DICOM SEG in the site's PACS "
                                                "(sites.yaml pacs:).")] = False,
            workspace: WorkspaceOpt = None, sites: Annotated[Path, typer.Option("--sites", help="Site registry "
                                                            "(only for pacs: inputs and --store).")] = REPO_SITES,
            as_json: JsonOpt = False) -> None:
    """Segment new studies with a site's approved model (its champion unless --model says otherwise):
    masks on each input's own grid as NIfTI, and a DICOM SEG for DICOM input. A bad input is
    reported and skipped; the exit status is 2 if any was."""
    from tl_med.inference import Predictor
    from tl_med.models.zoo import resolve_device
    from tl_med.predict.inputs import collect
    from tl_med.predict.run import predict_inputs

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: cannot write there (FileExistsError)")
    tmp = Path(tempfile.mkdtemp(prefix="tlmed-predict-"))
    try:
        net, spec, label = _model(model, site, task, workspace, tmp / "model")
        refs = [i for i in inputs if i.startswith(PACS_PREFIX)]
        paths = [Path(i) for i in inputs if not i.startswith(PACS_PREFIX)]
        pacs = None
        if refs:
            folders, pacs = _pacs_inputs(refs, site, sites, workspace, tmp / "pacs")
            paths += folders
        if store and pacs is None:
            pacs = _site_pacs(site, sites, workspace)
        device = resolve_device("auto")
        with progress_view():
            outcomes = predict_inputs(Predictor(net, spec, device), collect(paths), out, model=label, force=force)
        stored = _store([o for o in outcomes if o.ok], pacs) if store and pacs is not None else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _report(outcomes, label, spec, stored, as_json)
    if not all(o.ok for o in outcomes):
        raise typer.Exit(2)


def _site_pacs(site: str, sites: Path, workspace: Path | None):
    from tl_med.sites import load_sites

    config = load_sites(sites, resolve_workspace(workspace).root).get(site)
    if config.pacs is None:
        raise InputError(f"site '{site}' has no pacs: block in {sites} (needed for pacs: inputs and --store)")
    return config.pacs


def _report(outcomes, label: str, spec, stored: int, as_json: bool) -> None:
    if as_json:
        emit_json({"schema": "tl_med.predict/1", "model": label, "task": spec.task, "site": spec.site,
                   "labels": spec.labels, "stored_in_pacs": stored,
                   "outputs": [{"name": o.name, "kind": o.kind, "nifti": str(o.nifti) if o.nifti else None,
                                "seg": str(o.seg) if o.seg else None, "volumes_ml": o.volumes_ml,
                                "classes": o.classes, "error": o.reason or None} for o in outcomes]})
        return
    for o in outcomes:
        if o.ok:
            files = ", ".join(str(p) for p in (o.nifti, o.seg) if p)
            volumes = ", ".join(f"{k} {v:.1f} ml" for k, v in o.volumes_ml.items())
            classes = ", ".join(f"{k} {v:.2f}" for k, v in o.classes.items())
            console.print(f"{o.name}: {files} ({volumes})" + (f"; class probabilities {classes}" if classes else ""),
                          markup=False)
        else:
            err.print(f"error: {o.name}: {o.reason}", markup=False)
    done = sum(o.ok for o in outcomes)
    console.print(f"{done} of {len(outcomes)} inputs segmented with {label}"
                  + (f"; {stored} SEG(s) stored in the PACS" if stored else ""), markup=False)


@app.command()
def export(site: Annotated[str, typer.Option("--site", help="Whose model to export.")],
           out: Annotated[Path, typer.Option("--out", help="Folder to write the MONAI bundle into (new or empty).")],
           model: Annotated[Optional[str], typer.Option("--model", help="models:/<name>/<version> or "
                            "models:/<name>@<alias> (default: the site's champion).")] = None,
           task: TaskOpt = None, workspace: WorkspaceOpt = None) -> None:
    """Write an approved version as a MONAI bundle (model-zoo layout: configs/metadata.json,
    configs/inference.json, models/model.pt, docs/README.md). Versions nobody approved are refused:
    bundle configs are executable."""
    from tl_med.export.bundle import export_bundle
    from tl_med.predict.models import download_version, resolve_version, site_task

    if model is not None and not model.startswith("models:/"):
        raise InputError(f"model {model}: export takes a registered version (models:/…), which must be approved")
    tracker = _tracker(workspace)
    version = resolve_version(model, site=site, task=task or site_task(tracker, site), tracker=tracker)
    label, tags = f"{version.name} v{version.version}", version.tags
    if tags.get("decision") != "approved":
        raise InputError(f"{label} was not approved (decision: {tags.get('decision') or 'none'}): approve it "
                         "with tl-med approve before exporting it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder")
    tmp = Path(tempfile.mkdtemp(prefix="tlmed-export-"))
    try:
        folder = download_version(version, tracker=tracker, dst=tmp)
        dice = float(tags["test_dice"]) if tags.get("test_dice") else None
        export_bundle(folder, out, name=version.name, version=str(version.version),
                      source=f"{label} (approved by {tags.get('decided_by', '?')})", dice=dice)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    console.print(f"{label} exported as a MONAI bundle: {out}", markup=False)
    console.print(f"  run it:    python -m monai.bundle run --config_file {out}/configs/inference.json --bundle_root "
                  f"{out} --dataset_dir <folder with imagesTs/> --output_dir <out>", markup=False)
