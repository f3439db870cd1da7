"""Distinctive PHI planted in every identifying attribute of a DICOM file, and a reader that looks
inside what the pipeline writes (gzip, Prefect's persisted results) when scanning for it."""

from __future__ import annotations

# Distinctive PHI planted in every identifying attribute of every input file. The dates lie more than
# a year apart: de-identification may shift a date back by up to 365 days, and a shifted SeriesDate must
# not land by chance on the planted StudyDate (it did, once in CI, with a one-day shift).
PLANTED = {
    "PatientName": "QXNAME^PLANTED", "PatientID": "QXPID77", "PatientBirthDate": "19070203",
    "OtherPatientIDs": "QXOTHERID", "PatientAddress": "QX 12 PLANTED STREET",
    "InstitutionName": "QX PLANTED INSTITUTE", "InstitutionAddress": "QX INSTITUTE ROAD",
    "StationName": "QXSTATION9", "DeviceSerialNumber": "QXSERIAL55", "ReferringPhysicianName": "QXREF^DOCTOR",
    "PerformingPhysicianName": "QXPERF^DOCTOR", "OperatorsName": "QXOPERATOR", "AccessionNumber": "QXACC31",
    "StudyDescription": "QX PLANTED STUDY DESC", "SeriesDescription": "QX PLANTED SERIES DESC",
    "StudyID": "QXSTUDYID", "ImageComments": "QX PLANTED COMMENT", "StudyDate": "19160311",
    "SeriesDate": "19180412", "AcquisitionDate": "19200513", "ContentDate": "19220614",
}


def plant_phi(dicom_dir):
    import pydicom

    uids = set()
    for path in sorted(p for p in dicom_dir.rglob("*") if p.is_file()):
        ds = pydicom.dcmread(path)
        for keyword, value in PLANTED.items():
            setattr(ds, keyword, value)
        ds.add_new(0x00091010, "LO", "QXPRIVATEPHI")  # a private tag
        ds.private_block(0x0011, "QX CREATOR", create=True).add_new(0x01, "LO", "QXPRIVATE2")
        ds.save_as(path, enforce_file_format=True)
        uids |= {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID}
    return uids


def text_of(path):
    import base64
    import gzip
    import json

    blob = path.read_bytes()
    if path.name.endswith(".gz"):
        return gzip.decompress(blob)
    if b'"serializer"' in blob[:4096]:  # a persisted Prefect task result: base64 of a pickle
        record = json.loads(blob)
        return blob + base64.b64decode(record["result"])
    return blob
