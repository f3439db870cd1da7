"""Keyed, non-reversible identifiers: the only names a case has after ingest.

Example:
    >>> cid = case_id(b"k" * 32, "1.2.3.4")
    >>> cid.startswith("c"), len(cid)
    (True, 13)
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["keyed_hash", "case_id", "ACQUISITION_KEYS"]

# Acquisition attributes that explain domain shift and identify no one (kept in the manifest).
ACQUISITION_KEYS = ("KVP", "ConvolutionKernel", "ContrastBolusAgent", "MagneticFieldStrength",
                    "RepetitionTime", "EchoTime", "ScanningSequence", "SequenceVariant",
                    "MRAcquisitionType", "SliceThickness")


def keyed_hash(key: bytes, value: str, length: int = 12) -> str:
    """HMAC-SHA256 of ``value`` under the project key, as ``length`` hex characters."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:length]


def case_id(key: bytes, series_uid: str) -> str:
    """The de-identified case id of a series: ``c`` + 12 hex characters of a keyed hash."""
    return "c" + keyed_hash(key, series_uid)
