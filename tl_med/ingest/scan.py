"""Discover DICOM files in any folder tree and read their headers (no pixels).

Each file becomes a :class:`SliceHeader` (an image slice with geometry), is skipped as a non-image
object, or is quarantined with a one-line reason. Nothing here keeps identifying attributes except
the UIDs needed for grouping, and those never leave the ingest package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from tl_med.ingest.deid import ACQUISITION_KEYS
from tl_med.ingest.report import IngestReport

__all__ = ["SliceHeader", "scan_dicom_tree", "NON_IMAGE_MODALITIES"]

NON_IMAGE_MODALITIES = {"SR", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SEG", "PR", "KO",
                        "ECG", "HD", "AU", "DOC", "REG", "FID", "PLAN"}


@dataclass(frozen=True)
class SliceHeader:
    """The header facts of one single-frame image slice needed to build a volume."""

    path: Path
    rel: str
    study_uid: str
    series_uid: str
    accession: str
    modality: str
    manufacturer: str
    model: str
    rows: int
    cols: int
    iop: tuple[float, ...]
    ipp: tuple[float, float, float]
    pixel_spacing: tuple[float, float]
    instance_number: int
    echo: str
    acquisition: tuple[tuple[str, str], ...]


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != "DICOMDIR")


def _header(path: Path, rel: str) -> SliceHeader | str:
    """A SliceHeader, or the reason the file is not a usable single-frame image slice."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    modality = str(ds.get("Modality", ""))
    sop_name = getattr(ds.get("SOPClassUID"), "name", "")
    if modality in NON_IMAGE_MODALITIES or (sop_name and "Image Storage" not in sop_name):
        return f"skip:non-image object (Modality {modality or '?'}, {sop_name or 'unknown SOP class'})"
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return "quarantine:multi-frame image (enhanced multi-frame is not supported yet)"
    missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns",
                           "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
               if ds.get(k) in (None, "")]
    if missing:
        return f"quarantine:image without {', '.join(missing)} (no usable geometry)"
    acq = tuple((k, str(ds.get(k))) for k in ACQUISITION_KEYS if ds.get(k) not in (None, ""))
    return SliceHeader(
        path=path, rel=rel, study_uid=str(ds.StudyInstanceUID), series_uid=str(ds.SeriesInstanceUID),
        accession=str(ds.get("AccessionNumber", "")), modality=modality,
        manufacturer=str(ds.get("Manufacturer", "")), model=str(ds.get("ManufacturerModelName", "")),
        rows=int(ds.Rows), cols=int(ds.Columns),
        iop=tuple(float(v) for v in ds.ImageOrientationPatient),
        ipp=tuple(float(v) for v in ds.ImagePositionPatient),  # type: ignore[arg-type]
        pixel_spacing=(float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])),
        instance_number=int(ds.get("InstanceNumber", 0) or 0),
        echo=str(ds.get("EchoNumbers", "")), acquisition=acq,
    )


def scan_dicom_tree(root: Path, report: IngestReport, rel_to: Path) -> list[SliceHeader]:
    """Read the header of every file under ``root``; record skips and quarantines in ``report``."""
    slices: list[SliceHeader] = []
    for path in _files(root):
        rel = str(path.relative_to(rel_to))
        report.n_inputs += 1
        try:
            result = _header(path, rel)
        except InvalidDicomError as exc:
            report.record(rel, "quarantined", f"not a DICOM file ({str(exc).splitlines()[0][:120]})")
            continue
        except Exception as exc:  # noqa: BLE001 - any parse failure is a quarantine, never a crash
            report.record(rel, "quarantined", f"unreadable DICOM header ({type(exc).__name__}: "
                                              f"{str(exc).splitlines()[0][:120] if str(exc) else ''})")
            continue
        if isinstance(result, str):
            kind, reason = result.split(":", 1)
            report.record(rel, "skipped" if kind == "skip" else "quarantined", reason)
        else:
            slices.append(result)
    return slices
