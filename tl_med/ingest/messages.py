"""One-line failure reasons that never echo values from the input (they could identify someone)."""

from __future__ import annotations

import re

__all__ = ["safe_message"]

_QUOTED = re.compile(r"('[^']*'|\"[^\"]*\"|b'[^']*')")
_LONG_NUMBER = re.compile(r"\d[\d.]{5,}")


def safe_message(exc: BaseException) -> str:
    """``Type: first line of the message`` with quoted values and long numbers (UIDs, dates) masked."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = _LONG_NUMBER.sub("#", _QUOTED.sub("'…'", text))[:140]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
