"""Write a synthetic volume as a real DICOM series: one CT/MR Image Storage file per slice.

Files carry the Patient, General Study/Series, Frame of Reference, General Equipment, Image Plane,
Image Pixel and CT/MR Image modules, with geometry that matches the array exactly. Patient and study
attributes are filled with obviously fake PHI, so tests can prove none of it leaves ingest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import copy

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, PYDICOM_IMPLEMENTATION_UID, generate_uid

from tl_med.data.scanners import ScannerProfile, grid_geometry

__all__ = ["FakePatient", "SeriesUIDs", "write_series", "axial_ct_slice"]


@dataclass(frozen=True)
class FakePatient:
    """Obviously fake identifying attributes for one synthetic study."""

    name: str
    patient_id: str
    birth_date: str
    sex: str
    study_date: str
    accession: str
    institution: str
    station: str
    device_serial: str
    referring_physician: str
    study_description: str
    series_description: str


@dataclass(frozen=True)
class SeriesUIDs:
    study: str
    series: str
    frame_of_reference: str
    instance_root: str


def _f(v: float) -> str:
    """A DICOM DS string (at most 16 characters) for ``v``."""
    s = f"{v:.6g}"
    return s if len(s) <= 16 else f"{v:.8e}"[:16]


def _base_dataset(p: ScannerProfile, who: FakePatient, uids: SeriesUIDs) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if p.orientation == "axial" else "OTHER"]
    ds.SOPClassUID = CTImageStorage if p.modality == "CT" else MRImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = who.study_date
    ds.StudyTime = ds.SeriesTime = "101500"
    ds.AccessionNumber = who.accession
    ds.Modality = p.modality
    ds.Manufacturer = p.manufacturer
    ds.ManufacturerModelName = p.model
    ds.InstitutionName = who.institution
    ds.StationName = who.station
    ds.DeviceSerialNumber = who.device_serial
    ds.ReferringPhysicianName = who.referring_physician
    ds.StudyDescription = who.study_description
    ds.SeriesDescription = who.series_description
    ds.PatientName = who.name
    ds.PatientID = who.patient_id
    ds.PatientBirthDate = who.birth_date
    ds.PatientSex = who.sex
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "ABDOMEN"
    ds.SliceThickness = _f(p.slice_thickness)
    for key, value in p.acquisition.items():
        setattr(ds, key, value)
    ds.StudyInstanceUID = uids.study
    ds.SeriesInstanceUID = uids.series
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.FrameOfReferenceUID = uids.frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = p.rows, p.cols
    ds.PixelSpacing = [_f(p.pixel_spacing), _f(p.pixel_spacing)]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept = _f(p.rescale_intercept)
    ds.RescaleSlope = _f(p.rescale_slope)
    ds.RescaleType = "HU" if p.modality == "CT" else "US"
    return ds


def write_series(values: np.ndarray, p: ScannerProfile, who: FakePatient, uids: SeriesUIDs,
                 out_dir: Path) -> list[Path]:
    """Write ``values`` (physical units, shape ``(cols, rows, slices)``) as one file per slice.

    Files are named ``IM00001``… (no extension, as many PACS exports are). With
    ``p.descending_instances`` the InstanceNumber runs against the slice position, so readers that
    sort by InstanceNumber get the volume upside down.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    row, col, normal, origin = grid_geometry(p)
    stored = np.clip(np.rint((values - p.rescale_intercept) / p.rescale_slope), 0, 65535).astype(np.uint16)
    base = _base_dataset(p, who, uids)
    base.ImageOrientationPatient = [_f(v) for v in (*row, *col)]
    paths = []
    n = p.n_slices
    for k in range(n):
        ds = copy.deepcopy(base)
        number = n - k if p.descending_instances else k + 1
        ds.SOPInstanceUID = f"{uids.instance_root}.{number}"
        ds.InstanceNumber = number
        pos = origin + k * p.slice_spacing * normal
        ds.ImagePositionPatient = [_f(v) for v in pos]
        ds.SliceLocation = _f(float(pos @ normal))
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        path = out_dir / f"IM{number:05d}"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths



def axial_ct_slice(study: str, series: str, frame_of_reference: str, *, z: float, origin: tuple[float, float] = (0.0, 0.0),
                   pixel_spacing: tuple[float, float] = (1.0, 1.0), thickness: float = 1.0, rows: int = 512,
                   cols: int = 512, bits: int = 16, stored: int = 12, signed: bool = False) -> Dataset:
    """The bare minimum of one axial CT Image Storage slice (explicit VR little endian, a fresh SOP
    Instance UID, no patient module): what benchmarks and tests build corpora from. The caller adds
    pixel data, rescale and any other attributes it needs."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.Modality = CTImageStorage, "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [origin[0], origin[1], z]
    ds.PixelSpacing, ds.SliceThickness = list(pixel_spacing), thickness
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, stored, stored - 1, int(signed)
    return ds
