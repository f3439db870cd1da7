"""Builders of the bad inputs a hospital's folders really contain (used by the ingest tests)."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence


def bad_vr(src: Path, dst: Path) -> None:
    raw = src.read_bytes()
    i = raw.find(b"\x08\x00\x60\x00CS")  # Modality, explicit VR
    dst.write_bytes(raw[:i + 4] + b"Q!" + raw[i + 6:])


def no_transfer_syntax(src: Path, dst: Path) -> None:
    ds = pydicom.dcmread(src)
    del ds.file_meta.TransferSyntaxUID
    ds.save_as(dst, enforce_file_format=False, implicit_vr=False, little_endian=True)


def broken_sequence(src: Path, dst: Path) -> None:
    ds = pydicom.dcmread(src)
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = "1.2.3", "1.2.3.4"
    ds.ReferencedImageSequence = Sequence([item])
    ds.save_as(dst, enforce_file_format=True)
    raw = dst.read_bytes()
    j = raw.find(b"\x08\x00\x40\x11SQ\x00\x00")
    dst.write_bytes(raw[:j + 8] + (0x7FFFFFF0).to_bytes(4, "little") + raw[j + 12:])  # length past EOF


def short_pixels(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes()[:-100])


def truncated_header(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes()[:300])
