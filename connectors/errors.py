"""Errors of the connector boundary (FHIR and PACS).

Messages carry resource types and ids, URLs without credentials, AE titles and UIDs;
never patient names, birth dates or note text.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base class of every error raised by ``connectors``."""


class FhirError(ConnectorError):
    """A FHIR interaction failed."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        url: str = "",
        issue_codes: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.url = url
        #: ``issue.code`` values of the OperationOutcome the server answered with, if any.
        self.issue_codes = issue_codes


class ResourceNotFound(FhirError):
    """The server (or folder) has no such resource (HTTP 404/410)."""


class FhirAuthError(FhirError):
    """Authentication or authorization against the FHIR server failed (401/403, token)."""


class FhirServerError(FhirError):
    """The server kept failing (5xx/429/timeouts) after every retry."""


class FhirInvalidResource(FhirError):
    """A resource did not parse as R4, or the server rejected one (400/422)."""


class PacsError(ConnectorError):
    """A DICOM interaction failed."""


class AssociationError(PacsError):
    """The association was refused, aborted or timed out after every retry.

    The message names both AE titles, ``host:port``, the number of attempts and the last
    reason (rejection result/source/diagnostic, abort, timeout or connection failure).
    """

    def __init__(self, message: str, *, attempts: int = 1, reason: str = "") -> None:
        super().__init__(message)
        self.attempts = attempts
        self.reason = reason


class DimseStatusError(PacsError):
    """A DIMSE service (C-FIND, C-GET, C-MOVE, C-STORE) answered with a non-success status.

    ``status`` is the DIMSE status code (e.g. ``0xA801`` move destination unknown).
    """

    def __init__(self, message: str, *, service: str, status: int) -> None:
        super().__init__(message)
        self.service = service
        self.status = status


class RetrieveIncomplete(PacsError):
    """A series retrieval ended with fewer instances than the PACS announced or with failed
    sub-operations; nothing of it was cached."""

    def __init__(self, message: str, *, expected: int, received: int, failed: int = 0) -> None:
        super().__init__(message)
        self.expected = expected
        self.received = received
        self.failed = failed


class DicomWebError(PacsError):
    """A DICOMweb (QIDO-RS/WADO-RS) request failed: an HTTP error status, a malformed
    answer, or timeouts/5xx after every retry."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        url: str = "",
        issue_codes: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.url = url
        #: ``issue.code`` values of the OperationOutcome the server answered with, if any.
        self.issue_codes = issue_codes


class StorageScpError(PacsError):
    """Our own Storage SCP (the C-MOVE destination) could not start, e.g. port in use."""


class DicomInvalid(PacsError):
    """A DICOM file or dataset lacks what the pipeline needs; names the file or UID."""
