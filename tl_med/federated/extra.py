"""NVFlare is an optional extra: whether it is installed, and the one-line error when it is not."""

from __future__ import annotations

from tl_med.errors import InputError

__all__ = ["INSTALL", "nvflare_available", "require_nvflare"]

INSTALL = "pip install -e '.[federated]'"


def nvflare_available() -> bool:
    """Whether the optional ``nvflare`` package can be imported."""
    try:
        import nvflare  # noqa: F401
    except ImportError:
        return False
    return True


def require_nvflare() -> None:
    """Raise a one-line :class:`InputError` naming the install command when NVFlare is missing."""
    if not nvflare_available():
        raise InputError(f"federated pretraining runs on NVFlare, an optional extra: {INSTALL}")
