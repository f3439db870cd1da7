"""One DICOM dataset → the image planes (frames) it holds, with everything needed to build a volume.

A classic single-frame image gives one :class:`Frame`; an enhanced multi-frame image (Enhanced
CT/MR/PET, per-frame functional groups) gives one per frame, its position, orientation, pixel
spacing and rescale taken from the per-frame group, else the shared group. Non-image objects
give a ``skip:`` reason and unusable images a ``quarantine:`` reason.

The UIDs and accession number kept on a frame are used only for grouping and label pairing
inside the ingest package; they never leave it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import config
from pydicom.datadict import DicomDictionary, dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.hooks import hooks, raw_element_value, raw_element_vr
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.values import convert_value

from tl_med.ingest.messages import safe_message
from tl_med.own_segs import PREDICTION_MANUFACTURER

__all__ = ["Frame", "frames_of", "NON_IMAGE_MODALITIES", "ACQUISITION_KEYS", "REPEAT_KEYS"]

NON_IMAGE_MODALITIES = {"SR", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "RTIMAGE", "SEG", "PR",
                        "KO", "ECG", "HD", "AU", "DOC", "REG", "FID", "PLAN", "RWV"}

# Acquisition attributes that explain domain shift and identify no one (kept in the manifest).
# Contrast/Bolus Agent is free text (Annex E action D), so only its presence is kept.
ACQUISITION_KEYS = ("KVP", "ConvolutionKernel", "MagneticFieldStrength", "RepetitionTime",
                    "EchoTime", "ScanningSequence", "SequenceVariant", "MRAcquisitionType",
                    "SliceThickness", "XRayTubeCurrent", "ExposureTime", "FlipAngle")

# headers that separate distinct images sharing a slice position within one series, in order of
# preference: a time point of a dynamic series, a repeated acquisition, its time
REPEAT_KEYS = ("TemporalPositionIdentifier", "AcquisitionNumber", "AcquisitionTime")

_PIXEL_DATA = Tag(0x7FE0, 0x0010)
_ABSENT = object()
_NATIVE_LE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}


@dataclass(frozen=True)
class Frame:
    """One 2-D image plane: a single-frame file, or frame ``index`` of a multi-frame file.

    ``native`` is ``(byte offset, numpy dtype, sign bits)`` when the plane can be read straight
    from the file (uncompressed little-endian, one sample per pixel); otherwise pixels are decoded
    by pydicom (compressed, big-endian, deflated ...).
    """

    path: Path
    rel: str
    file_sha256: str
    index: int | None
    study_uid: str
    series_uid: str
    accession: str
    patient: str
    modality: str
    manufacturer: str
    model: str
    rows: int
    cols: int
    iop: tuple[float, ...]
    ipp: tuple[float, float, float]
    pixel_spacing: tuple[float, float]
    thickness: float  # nominal slice spacing: SpacingBetweenSlices, else SliceThickness
    slope: float
    intercept: float
    echo: str
    stack: str
    acquisition: tuple[tuple[str, str], ...]
    native: tuple[int, str, int] | None
    sop_uid: str = ""
    # what tells apart distinct images at the same position (repeated acquisitions, time points)
    repeat: tuple[tuple[str, str], ...] = ()


_TAGS: dict[str, int] = {}
# VRs whose raw value pydicom converts with convert_value alone (no sequence, no ambiguous VR)
_PLAIN_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "PN", "SH", "SL", "SS",
                        "ST", "TM", "UI", "UL", "US"})
_DEFAULT_HOOKS = (raw_element_vr, raw_element_value)


class _Header:
    """One dataset's header values, each converted once (the header scan's hot path).

    ``get(keyword)`` is ``ds.get(keyword)``: a plain element still in its raw form (the usual
    case after a read) is converted by pydicom's own ``convert_value``, exactly as ``ds[tag]``
    would, without pydicom's per-access attribute machinery and without storing it back in the
    dataset; anything else (a sequence, a deferred or ambiguous element, custom pydicom hooks)
    goes through ``ds[tag]``.
    """

    __slots__ = ("ds", "_raw", "_values", "_encoding")

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        fast = (not config.data_element_callback and not hooks.raw_element_kwargs
                and (hooks.raw_element_vr, hooks.raw_element_value) == _DEFAULT_HOOKS)
        self._raw: dict | None = getattr(ds, "_dict", None) if fast else None
        self._values: dict[str, Any] = {}
        self._encoding: Any = None

    def get(self, keyword: str, default: Any = None) -> Any:
        try:
            value = self._values[keyword]
        except KeyError:
            value = self._values[keyword] = self._read(keyword)
        return default if value is None else value

    def _read(self, keyword: str) -> Any:
        tag = _TAGS.get(keyword)
        if tag is None:
            tag = _TAGS[keyword] = tag_for_keyword(keyword)  # type: ignore[assignment]
        # (Specific Character Set itself is decoded differently: pydicom's own path)
        raw = self._raw.get(tag, _ABSENT) if self._raw is not None and tag != 0x00080005 else None
        if raw is _ABSENT:
            return None
        vr = None
        if type(raw) is RawDataElement and raw.value is not None:
            vr = raw.VR or (dictionary_VR(tag) if tag in DicomDictionary else None)  # implicit VR: the dictionary's
        if vr in _PLAIN_VRS:
            if self._encoding is None:  # what Dataset.__getitem__ decodes text with
                self._encoding = self.ds.original_character_set or self.ds._character_set
            try:
                return convert_value(vr, raw, self._encoding)
            except Exception:  # noqa: BLE001 - let pydicom's full path convert (or fail) as it does
                pass
        try:
            return self.ds[tag].value
        except KeyError:
            return None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None or value == "":
        return None
    items = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    try:
        vals = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        return None
    return vals if len(vals) == n and all(map(math.isfinite, vals)) else None


def _nominal_spacing(h: _Header, between: Any, thickness: Any) -> float:
    """SpacingBetweenSlices when given, else SliceThickness (only used for single-slice stacks)."""
    for value in (between if between not in (None, "") else h.get("SpacingBetweenSlices"), thickness):
        try:
            if value not in (None, "") and float(value) > 0:
                return float(value)
        except (TypeError, ValueError):
            continue
    return 0.0


def _group_value(groups: list[Dataset | None], seq: str, attr: str) -> Any:
    """``attr`` from the first functional group (per-frame, then shared) whose ``seq`` has it."""
    for g in groups:
        if g is None or seq not in g or not g[seq].value:
            continue
        val = g[seq].value[0].get(attr)
        if val not in (None, ""):
            return val
    return None


def _native(h: _Header, frames: int) -> tuple[int, str, int] | None | str:
    """Where the raw pixels lie, ``None`` when pydicom must decode them, or a quarantine reason."""
    ds = h.ds
    elem = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if elem is None:
        return "quarantine:image without Pixel Data"
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsyntax is None:
        return "quarantine:no Transfer Syntax UID in the file meta information"
    bits, stored = int(h.get("BitsAllocated", 0) or 0), int(h.get("BitsStored", 0) or 0)
    if tsyntax not in _NATIVE_LE or bits not in (8, 16, 32) or not hasattr(elem, "value_tell"):
        return None
    expected = h.get("Rows") * h.get("Columns") * frames * bits // 8
    length = elem.length
    if length == 0xFFFFFFFF:
        return None
    if length < expected:
        return (f"quarantine:pixel data shorter than declared ({length} bytes where Rows x Columns x "
                f"frames x BitsAllocated needs {expected})")
    signed = int(h.get("PixelRepresentation", 0) or 0) == 1
    dtype = f"<{'i' if signed else 'u'}{bits // 8}"
    return elem.value_tell, dtype, (bits - stored if signed and 0 < stored < bits else 0)


def _check_elements(ds: Dataset, size: int, depth: int = 0) -> str | None:
    """One pass over the elements: the first whose declared length runs past the end of the file,
    as a reason; every sequence is parsed (pydicom defers them) so a broken one fails here."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)
        tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
        if depth == 0 and tell is not None and length not in (None, 0xFFFFFFFF) and tell + length > size:
            what = "Pixel Data" if tag == _PIXEL_DATA else f"element {tag} ({raw.VR or '?'})"
            kind = "broken sequence" if raw.VR == "SQ" else "file truncated"
            return f"{kind} ({what} declares {length} bytes, {max(size - tell, 0)} present)"
        vr = raw.VR if raw is not None else None
        if vr is None and tag.element != 0 and not tag.is_private:
            vr = dictionary_VR(tag) if tag in DicomDictionary else None
        if vr == "SQ" and depth < 8:
            for item in ds[tag].value:
                _check_elements(item, size, depth + 1)
    return None


def _reject(h: _Header) -> str | None:
    ds = h.ds
    modality = _text(h.get("Modality"))
    sop_name = getattr(h.get("SOPClassUID"), "name", "")
    if modality in NON_IMAGE_MODALITIES or (sop_name and "Image Storage" not in sop_name):
        return f"skip:non-image object (Modality {modality or '?'}, {sop_name or 'unknown SOP class'})"
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        return "quarantine:image without Pixel Data (file truncated, or the image was never stored)"
    if int(h.get("SamplesPerPixel", 1) or 1) != 1:
        return f"skip:colour image (SamplesPerPixel {h.get('SamplesPerPixel')}), not a grayscale volume"
    if "MOSAIC" in [str(v).upper() for v in h.get("ImageType", [])]:
        return "quarantine:Siemens mosaic (not supported: export the series as single slices)"
    return None


def frames_of(ds: Dataset, path: Path, rel: str, size: int, sha256: str = "") -> list[Frame] | str:
    """The frames of ``ds``, or a ``skip:``/``quarantine:`` reason (one line)."""
    try:
        problem = _check_elements(ds, size)
    except Exception as exc:  # noqa: BLE001 - any malformed sequence is a quarantine
        return f"quarantine:broken sequence ({safe_message(exc)})"
    if problem:
        return f"quarantine:{problem}"
    h = _Header(ds)
    if str(h.get("SOPClassUID") or "") == "1.2.840.10008.5.1.4.1.1.66.4" and h.get("Manufacturer") == PREDICTION_MANUFACTURER:
        # tl_med's own prediction, stored back into the PACS: never a reference label to train on
        return "skip:a segmentation predicted by tl_med (Manufacturer tl_med), not a reference label"
    if str(h.get("SOPClassUID") or "") == "1.2.840.10008.5.1.4.1.1.66.4" and h.get("ReferencedSeriesSequence"):
        # a DICOM SEG: a label for the series it references (paired by ingest; see ingest/seg.py)
        return f"seg:{h.get('ReferencedSeriesSequence')[0].SeriesInstanceUID}"
    rejected = _reject(h)
    if rejected:
        return rejected
    n = int(h.get("NumberOfFrames", 1) or 1)
    per_frame = h.get("PerFrameFunctionalGroupsSequence")
    shared = h.get("SharedFunctionalGroupsSequence")
    enhanced = per_frame is not None or shared is not None
    if n > 1 and not enhanced:
        return "skip:multi-frame image without per-frame geometry (cine or projection series), not a volume"
    native = _native(h, n)
    if isinstance(native, str):
        return native
    missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns") if h.get(k) in (None, "")]
    if missing:
        return f"quarantine:image without {', '.join(missing)}"
    common = dict(
        path=path, rel=rel, file_sha256=sha256, study_uid=_text(h.get("StudyInstanceUID")), series_uid=_text(h.get("SeriesInstanceUID")),
        accession=_text(h.get("AccessionNumber")), patient=_text(h.get("PatientID")),
        modality=_text(h.get("Modality")), manufacturer=_text(h.get("Manufacturer")),
        model=_text(h.get("ManufacturerModelName")), rows=int(h.get("Rows")), cols=int(h.get("Columns")),
    )
    acq = [(k, _text(v)) for k in ACQUISITION_KEYS if (v := h.get(k)) not in (None, "")]
    repeat = tuple((k, _text(h.get(k))) for k in REPEAT_KEYS)
    acq.append(("Contrast", "yes" if _text(h.get("ContrastBolusAgent")).strip() else "no"))
    frame_size = int(h.get("Rows")) * int(h.get("Columns")) * int(h.get("BitsAllocated", 8) or 8) // 8
    out: list[Frame] = []
    for i in range(n):
        groups = [per_frame[i] if per_frame is not None and i < len(per_frame) else None,
                  shared[0] if shared else None] if enhanced else []

        def get(seq: str, attr: str, _groups=groups) -> Any:
            return _group_value(_groups, seq, attr) if enhanced else h.get(attr)

        iop = _floats(get("PlaneOrientationSequence", "ImageOrientationPatient"), 6)
        ipp = _floats(get("PlanePositionSequence", "ImagePositionPatient"), 3)
        spacing = _floats(get("PixelMeasuresSequence", "PixelSpacing"), 2)
        if iop is None or ipp is None or spacing is None:
            if i == 0 and not enhanced and h.get("ImagePositionPatient") is None:
                return "skip:image without patient geometry (projection or secondary capture), not a volume"
            return "quarantine:image without usable ImagePositionPatient/ImageOrientationPatient/PixelSpacing"
        slope = get("PixelValueTransformationSequence", "RescaleSlope")
        intercept = get("PixelValueTransformationSequence", "RescaleIntercept")
        echo = (get("MREchoSequence", "EffectiveEchoTime") if enhanced else None) or h.get("EchoNumbers")
        stack = ""
        if enhanced:
            stack = "/".join(_text(_group_value(groups, "FrameContentSequence", k))
                             for k in ("StackID", "TemporalPositionIndex"))
        out.append(Frame(
            **common, index=i if n > 1 else None, iop=iop, ipp=ipp,  # type: ignore[arg-type]
            pixel_spacing=spacing,  # type: ignore[arg-type]
            thickness=_nominal_spacing(h, get("PixelMeasuresSequence", "SpacingBetweenSlices"),
                                       get("PixelMeasuresSequence", "SliceThickness")),
            slope=float(slope if slope not in (None, "") else 1.0),
            intercept=float(intercept if intercept not in (None, "") else 0.0),
            echo=_text(echo), stack=stack, acquisition=tuple(sorted(acq)),
            native=None if native is None else (native[0] + i * frame_size, native[1], native[2]),
            sop_uid=_text(h.get("SOPInstanceUID")), repeat=repeat,
        ))
    return out
