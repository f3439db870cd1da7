"""Real non-image objects are skipped with a reason; every compressed syntax decodes.

(pydicom's ``JPEG-lossy.dcm`` is left out: its JPEG stream has a misplaced marker that libjpeg
rejects; only GDCM decodes it.)"""

from pathlib import Path

import numpy as np
import pydicom.data
import pytest

from tl_med.ingest.convert import _decoded
from tl_med.ingest.scan import read_headers


def _file(name: str) -> Path:
    return Path(pydicom.data.get_testdata_file(name, download=False))


@pytest.mark.parametrize("name", ["rtplan.dcm", "rtdose.dcm", "reportsi.dcm", "test-SR.dcm",
                                  "waveform_ecg.dcm"])
def test_non_image_objects_are_skipped_with_a_reason(name):
    result = read_headers(_file(name), name)
    assert isinstance(result, str) and result.startswith("skip:non-image object"), result


def test_a_dicom_seg_is_held_as_the_label_of_the_series_it_references():
    path = _file("liver.dcm")  # pydicom's SEG test object
    referenced = pydicom.dcmread(path, stop_before_pixels=True).ReferencedSeriesSequence[0].SeriesInstanceUID
    assert read_headers(path, "liver.dcm") == f"seg:{referenced}"


@pytest.mark.parametrize("name, syntax", [
    ("JPEG-LL.dcm", "JPEG Lossless"), ("SC_rgb_jpeg_dcmtk.dcm", "JPEG Baseline"),
    ("JPGExtended.dcm", "JPEG Extended"), ("MR_small_jpeg_ls_lossless.dcm", "JPEG-LS Lossless"),
    ("JPEGLSNearLossless_16.dcm", "JPEG-LS Lossy"), ("MR_small_jp2klossless.dcm", "JPEG 2000"),
    ("MR_small_RLE.dcm", "RLE Lossless"), ("image_dfl.dcm", "Deflated"),
    ("MR_small_bigendian.dcm", "Big Endian"),
])
def test_every_transfer_syntax_decodes(name, syntax):
    path = _file(name)
    assert syntax in pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID.name
    pixels = pydicom.dcmread(path).pixel_array  # the plugins pydicom picks: pylibjpeg, pillow
    assert pixels.size and np.isfinite(pixels).all()
    if pydicom.dcmread(path, stop_before_pixels=True).SamplesPerPixel == 1:
        assert _decoded(path).shape[-2:] == pixels.shape[-2:]


def test_compressed_and_uncompressed_variants_decode_to_the_same_pixels():
    reference = _decoded(_file("MR_small.dcm"))
    for name in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
                 "MR_small_bigendian.dcm", "MR_small_implicit.dcm"):
        np.testing.assert_array_equal(_decoded(_file(name)), reference)
