"""Predict each input and write its outputs; a bad input is reported and skipped, never fatal.

For every input: the model's masks on the input's own grid as ``<out>/<name>.nii.gz`` (a clean
NIfTI header: the same writer as ingest), and for a DICOM series ``<out>/<name>.seg.dcm`` (a
DICOM SEG referencing its source instances). A model trained on one modality is not applied to
another unless forced.

Example:
    >>> # outcomes = predict_inputs(predictor, collect([Path("study")]), Path("out"), model="tlmed-liver-east v3")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tl_med.errors import InputError
from tl_med.ingest.convert import write_nifti
from tl_med.inference import Prediction, Predictor
from tl_med.predict.inputs import Input
from tl_med.predict.seg import segmentation
from tl_med.progress import track

__all__ = ["Outcome", "predict_inputs", "predict_one"]


@dataclass(frozen=True)
class Outcome:
    """What became of one input: its output files and label volumes (ml), or why it was skipped."""

    name: str
    kind: str
    nifti: Path | None = None
    seg: Path | None = None
    volumes_ml: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    notes: tuple[str, ...] = ()
    classes: dict[str, float] = field(default_factory=dict)  # a multi-task model's class probabilities

    @property
    def ok(self) -> bool:
        return not self.reason


def _volumes(pred: Prediction, labels: dict[str, str]) -> dict[str, float]:
    voxel_ml = float(abs(np.linalg.det(pred.affine[:3, :3]))) / 1000.0
    counts = np.bincount(pred.mask.ravel(), minlength=len(labels))
    return {labels[str(v)]: round(float(counts[v]) * voxel_ml, 2) for v in range(1, len(labels)) if str(v) in labels}


def _modality_refusal(item: Input, predictor: Predictor, force: bool) -> str:
    expected = predictor.spec.modalities() - {"?", ""}
    if force or not item.modality or not expected or item.modality in expected:
        return ""
    return (f"the model was trained on {predictor.spec.modality} and this series is {item.modality} "
            "(--force applies it anyway)")


def _channel_refusal(item: Input, predictor: Predictor) -> str:
    spec = predictor.spec
    if item.channels == spec.n_channels:
        return ""
    names = f" ({', '.join(spec.channels)})" if spec.channels else ""
    given = "a DICOM series is one" if item.kind == "dicom" else f"this image has {item.channels}"
    return (f"the model takes {spec.n_channels} channel(s){names} and {given}"
            + ("; give one 4-D NIfTI with the co-registered channels last" if spec.n_channels > 1 else ""))


def predict_one(predictor: Predictor, item: Input, out: Path, *, model: str, force: bool = False) -> Outcome:
    """Predict one input and write its outputs (never raises for a bad input)."""
    if item.reason:
        return Outcome(item.name, item.kind, reason=item.reason)
    refusal = _channel_refusal(item, predictor) or _modality_refusal(item, predictor, force)
    if refusal:
        return Outcome(item.name, item.kind, reason=refusal)
    nifti_out = out / f"{item.name}.nii.gz"
    if nifti_out.resolve() == item.source.resolve():
        return Outcome(item.name, item.kind, reason=f"the output {nifti_out} would overwrite the input")
    if item.kind == "nifti":
        pred = predictor.predict(item.source)
    else:
        volume = item.volume()
        if isinstance(volume, str):
            return Outcome(item.name, item.kind, reason=volume)
        pred = predictor.predict(volume)
    write_nifti(pred.mask, pred.affine, nifti_out)
    seg_out, notes = None, list(item.notes)
    volumes = _volumes(pred, predictor.spec.labels)
    if item.kind == "dicom" and item.geometry is not None:
        try:
            ds = segmentation(item.geometry, pred.mask, labels=predictor.spec.labels, model=model)
            seg_out = out / f"{item.name}.seg.dcm"
            ds.save_as(seg_out, enforce_file_format=True)
        except Exception as exc:  # noqa: BLE001 - an object highdicom cannot reference: the mask still stands
            return Outcome(item.name, item.kind, nifti_out, None, volumes, notes=tuple(notes),
                           reason=f"mask written, DICOM SEG not written ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:120] if str(exc) else 'no message'})",
                           classes=pred.classes)
    return Outcome(item.name, item.kind, nifti_out, seg_out, volumes, notes=tuple(notes), classes=pred.classes)


def predict_inputs(predictor: Predictor, inputs: list[Input], out: Path, *, model: str,
                   force: bool = False) -> list[Outcome]:
    """:func:`predict_one` for every input, with one progress step per input."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError, PermissionError) as exc:
        raise InputError(f"--out {out}: cannot write there ({type(exc).__name__})") from None
    return [predict_one(predictor, item, out, model=model, force=force)
            for item in track(inputs, "predict", f"predict with {model}", unit="inputs")]
