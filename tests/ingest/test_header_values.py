"""The header scan's value cache (header._Header) gives exactly what ``Dataset.get`` gives, for
every attribute the scan reads, in every encoding pydicom's test files hold."""

from pathlib import Path

import pydicom
import pydicom.data
import pytest

from tl_med.ingest.header import ACQUISITION_KEYS, REPEAT_KEYS, _Header

KEYWORDS = ("Modality", "SOPClassUID", "SOPInstanceUID", "Manufacturer", "ManufacturerModelName", "SamplesPerPixel",
            "ImageType", "NumberOfFrames", "BitsAllocated", "BitsStored", "PixelRepresentation", "Rows", "Columns",
            "StudyInstanceUID", "SeriesInstanceUID", "AccessionNumber", "PatientID", "ContrastBolusAgent",
            "ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept",
            "EchoNumbers", "SpacingBetweenSlices", "ReferencedSeriesSequence", "PatientName", "StudyDate",
            "SpecificCharacterSet", *ACQUISITION_KEYS, *REPEAT_KEYS)

DATA = Path(pydicom.data.__file__).parent
FILES = ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
         "MR_small_padded.dcm", "image_dfl.dcm", "JPEG-LL.dcm", "emri_small.dcm", "liver.dcm", "rtplan.dcm",
         "SC_rgb.dcm", "no_meta.dcm", "ExplVR_BigEndNoMeta.dcm", "OBXXXX1A.dcm", "empty_charset_LEI.dcm",
         "reportsi_with_empty_number_tags.dcm", "badVR.dcm", "UN_sequence.dcm", "nested_priv_SQ.dcm",
         "charset_files/chrH31.dcm", "charset_files/chrFrenMulti.dcm", "charset_files/chrSQEncoding.dcm",
         "charset_files/chrJapMulti.dcm", "charset_files/chrX1.dcm"]


def _value(get, keyword):
    try:
        return get(keyword)
    except Exception as exc:  # noqa: BLE001 - a value pydicom cannot convert must fail the same way
        return type(exc)


@pytest.mark.parametrize("name", FILES)
def test_cached_values_equal_pydicoms(name: str):
    path = DATA / name if "/" in name else Path(pydicom.data.get_testdata_file(name, download=False))
    fast = _Header(pydicom.dcmread(path, defer_size=1024, force=True))
    for keyword in KEYWORDS:
        reference = _value(pydicom.dcmread(path, defer_size=1024, force=True).get, keyword)  # fresh, unconverted
        value = _value(fast.get, keyword)
        assert value == reference and type(value) is type(reference), keyword
        if hasattr(value, "append"):
            assert [type(v) for v in value] == [type(v) for v in reference], keyword
        assert str(value) == str(reference), keyword
