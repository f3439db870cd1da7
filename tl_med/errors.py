"""Errors the pipeline raises for problems a user can fix.

Each carries a one-line message that names the file, field or site at fault; the CLI prints it
and exits non-zero instead of showing a traceback.
"""

__all__ = ["TlMedError", "InputError", "ConfigError"]


class TlMedError(Exception):
    """Base class for errors with a user-facing one-line message."""


class InputError(TlMedError):
    """Input data is missing, empty or unusable (names the site or path)."""


class ConfigError(TlMedError):
    """A configuration file or value is invalid (names the file and field)."""
