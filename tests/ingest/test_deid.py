"""Annex E de-identification of datasets kept as DICOM."""

import pydicom
import pydicom.data
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tl_med.ingest.deid import date_shift_days, deidentify, remap_uid

KEY = b"k" * 32


def _ct() -> Dataset:
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    ds.ReferencedImageSequence = Sequence([ref])
    ds.InstitutionName, ds.StationName, ds.DeviceSerialNumber = "QX INST", "QXSTATION", "QXSERIAL"
    ds.SeriesDescription, ds.AccessionNumber = "QX DESC", "QXACC"
    ds.add_new(0x00091010, "LO", "QXPRIVATE")
    return ds


def test_profile_actions_uids_and_markers():
    ds = _ct()
    sop, frame_of_ref, sop_class = ds.SOPInstanceUID, ds.FrameOfReferenceUID, ds.SOPClassUID
    out = deidentify(ds, KEY)
    assert "SeriesDescription" not in out  # X
    assert out.AccessionNumber in ("", None) and not out.get("StudyDate")  # Z
    assert out.get("InstitutionName") in (None, "") and "StationName" not in out or not out.StationName
    assert not any(e.tag.is_private for e in out.iterall())
    assert out.SOPInstanceUID == remap_uid(KEY, sop) and out.FrameOfReferenceUID == remap_uid(KEY, frame_of_ref)
    assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == out.SOPInstanceUID  # nested, consistent
    assert out.SOPClassUID == sop_class and out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.PatientIdentityRemoved == "YES" and out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert "CompressedSamples" not in str(out.PatientName)


def test_dates_shift_consistently_per_patient():
    a, b = _ct(), _ct()
    b.StudyDate = "20040125"
    shift = date_shift_days(KEY, str(a.PatientID))
    deidentify(a, KEY, dates="shift")
    deidentify(b, KEY, dates="shift")
    assert -365 <= shift <= -1
    assert (int(b.StudyDate) - int(a.StudyDate)) == 6  # intervals kept within a patient
    assert a.StudyDate != "20040119" and "113107" in [c.CodeValue for c in a.DeidentificationMethodCodeSequence]


def test_remapping_needs_the_key():
    assert remap_uid(KEY, "1.2.3") == remap_uid(KEY, "1.2.3") != remap_uid(b"x" * 32, "1.2.3")
    assert len(remap_uid(KEY, "1.2.3")) <= 64
