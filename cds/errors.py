"""Errors of the application layer (``cds``).

Each exception names the offending key, file or resource id in its message, never
protected health information (no names, birth dates or note text).
"""

from __future__ import annotations


class MprtmError(Exception):
    """Base class of every error the application raises on purpose."""


class ConfigError(MprtmError):
    """The configuration file or environment is invalid; the message names file and key.

    The CLI exits with status 2 on this error.
    """


class UsageError(MprtmError):
    """A command was called with arguments that cannot work together (exit status 2)."""


class TerminologyError(MprtmError):
    """A terminology server did not expand a value set; the message names the value set
    and the server's answer (HTTP status, OperationOutcome diagnostics)."""


class ValidationDataError(MprtmError):
    """A bundled validation data set (e.g. the Sunnybrook subset) is missing or malformed;
    the message names the folder or file."""


class MaskFileError(MprtmError):
    """A segmentation mask file (DICOM SEG or NIfTI) cannot be used: unreadable, for no
    known series, or not matching its series' geometry; the message names the file."""
