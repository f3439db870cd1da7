"""De-identification: keyed pseudonyms, and the DICOM PS3.15 Annex E Basic Application Level
Confidentiality Profile applied to datasets a site wants to keep as DICOM.

The attribute actions come from the Annex E table as published in DICOM 2026c (the tables that
ship with the ``dicom-anonymizer`` package; their application is ours):

* ``X`` remove; ``Z`` empty (or a pseudonym for the patient); ``D`` replace with a dummy value
  of the element's VR; ``U`` remap UIDs with a keyed hash. Combined actions take the stricter
  side that keeps the IOD valid: X/Z → Z, X/D → X, Z/D → Z, X/Z/D → Z, X/Z/U* → U for UIDs (and sequences of references, walked) else Z.
* Every other UID that is not a registered DICOM UID (SOP Class, Transfer Syntax ...) is remapped
  too, at any depth in sequences, so references and the Frame of Reference stay consistent.
* Private tags are removed; so are curves (50xx) and overlay comments/data (60xx), as the table says.
* Dates: ``remove`` replaces them per the table; ``shift`` moves every date by a per-patient
  offset derived from the key (Retain Longitudinal Temporal Information with Modified Dates).
* PatientIdentityRemoved = YES, DeidentificationMethod and its code sequence are set.

Remapping is consistent across a project (same key, same UID → same new UID) and not
reversible without the key.

Example:
    >>> cid = case_id(b"k" * 32, "1.2.3.4")
    >>> cid.startswith("c"), len(cid)
    (True, 13)
    >>> remap_uid(b"k" * 32, "1.2.3.4").startswith("2.25.")
    True
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Literal

from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as annex_e
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

__all__ = ["keyed_hash", "case_id", "remap_uid", "date_shift_days", "deidentify", "DatePolicy",
           "PROFILE_VERSION"]

DatePolicy = Literal["remove", "shift"]
PROFILE_VERSION = "DICOM PS3.15 Annex E (2026c) Basic Application Level Confidentiality Profile"

_ACTIONS: dict[tuple[int, int], str] = {}
for _name, _action in (("X_TAGS", "X"), ("Z_TAGS", "Z"), ("D_TAGS", "D"), ("U_TAGS", "U"),
                       ("X_Z_TAGS", "Z"), ("X_D_TAGS", "X"), ("Z_D_TAGS", "Z"), ("X_Z_D_TAGS", "Z"),
                       ("X_Z_U_STAR_TAGS", "ZU")):
    for _t in getattr(annex_e, _name):
        if len(_t) == 2:
            _ACTIONS[(_t[0], _t[1])] = _action
_MASKED = [(t[0], t[1], t[2], t[3], "X") for t in annex_e.X_TAGS if len(t) == 4]
_DUMMY = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "PN": "ANONYMOUS",
          "CS": "ANON", "AS": "000Y", "IS": "0", "DS": "0", "US": 0, "SS": 0, "UL": 0, "SL": 0,
          "FL": 0.0, "FD": 0.0}
_BYTES = {"OB", "OW", "OD", "OF", "OL", "OV", "UN"}


def keyed_hash(key: bytes, value: str, length: int = 12) -> str:
    """HMAC-SHA256 of ``value`` under the project key, as ``length`` hex characters."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:length]


def case_id(key: bytes, series_uid: str) -> str:
    """The de-identified case id of a series: ``c`` + 12 hex characters of a keyed hash."""
    return "c" + keyed_hash(key, series_uid)


def remap_uid(key: bytes, uid: str) -> str:
    """A new UID under the ``2.25`` (UUID-derived) root: a keyed hash of the old one."""
    digest = hmac.new(key, b"uid:" + uid.encode(), hashlib.sha256).digest()[:16]
    return f"2.25.{int.from_bytes(digest, 'big')}"


def date_shift_days(key: bytes, patient: str, max_days: int = 365) -> int:
    """A per-patient offset in ``[-max_days, -1]`` days, the same for every study of the patient."""
    digest = hmac.new(key, b"date:" + patient.encode(), hashlib.sha256).digest()
    return -1 - int.from_bytes(digest[:4], "big") % max_days


def _action(tag: int) -> str | None:
    group, elem = tag >> 16, tag & 0xFFFF
    found = _ACTIONS.get((group, elem))
    if found:
        return found
    for g, e, gm, em, act in _MASKED:
        if group & gm == g and elem & em == e:
            return act
    return None


def _shift(value: str, vr: str, days: int) -> str:
    try:
        day = dt.datetime.strptime(value[:8], "%Y%m%d") + dt.timedelta(days=days)
    except ValueError:
        return _DUMMY[vr]
    return day.strftime("%Y%m%d") + (value[8:] if vr == "DT" else "")


class _Deidentifier:
    def __init__(self, key: bytes, dates: DatePolicy, patient: str) -> None:
        self.key, self.dates = key, dates
        self.days = date_shift_days(key, patient)
        self.pseudonym = "p" + keyed_hash(key, "patient:" + patient)

    def uid(self, value: object) -> object:
        if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, str):
            return [self.uid(v) for v in value]  # type: ignore[union-attr]
        text = str(value)
        return text if not text or UID(text).is_transfer_syntax or UID(text).name != text \
            else remap_uid(self.key, text)

    def element(self, ds: Dataset, elem: DataElement) -> None:
        action = _action(elem.tag)
        if elem.VR == "UI" and action in (None, "U", "ZU", "D"):
            elem.value = self.uid(elem.value)
            return
        if action is None:
            return
        if elem.VR in ("DA", "DT") and self.dates == "shift" and elem.value:
            elem.value = _shift(str(elem.value), elem.VR, self.days)
            return
        if action == "X":
            del ds[elem.tag]
        elif action in ("Z", "ZU"):
            elem.value = Sequence() if elem.VR == "SQ" else (b"" if elem.VR in _BYTES else None)
        elif action == "D":
            elem.value = Sequence() if elem.VR == "SQ" else (b"" if elem.VR in _BYTES
                                                             else _DUMMY.get(elem.VR, "ANONYMIZED"))

    def walk(self, ds: Dataset) -> None:
        for elem in list(ds):
            if elem.VR == "SQ" and _action(elem.tag) in (None, "U", "ZU"):
                for item in elem.value:  # U*: keep the references, remap the UIDs inside
                    self.walk(item)
                continue
            self.element(ds, elem)


def deidentify(ds: Dataset, key: bytes, *, dates: DatePolicy = "remove") -> Dataset:
    """Apply the Basic Application Level Confidentiality Profile to ``ds`` in place; return it."""
    patient = str(ds.get("PatientID", "")) or str(ds.get("PatientName", ""))
    ds.remove_private_tags()
    worker = _Deidentifier(key, dates, patient)
    worker.walk(ds)
    if hasattr(ds, "file_meta") and "MediaStorageSOPInstanceUID" in ds.file_meta:
        ds.file_meta.MediaStorageSOPInstanceUID = worker.uid(ds.file_meta.MediaStorageSOPInstanceUID)
    ds.PatientID = worker.pseudonym
    ds.PatientName = worker.pseudonym
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = f"tl_med PS3.15 E basic profile; dates {'shifted' if dates == 'shift' else 'removed'}"
    codes = [("113100", "Basic Application Confidentiality Profile")]
    if dates == "shift":
        codes.append(("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))
    seq = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        seq.append(item)
    ds.DeidentificationMethodCodeSequence = seq
    return ds
