"""Errors of the connector boundary (FHIR and PACS).

Messages carry resource types and ids, URLs without credentials, AE titles and UIDs;
never patient names, birth dates or note text.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base class of every error raised by ``connectors``."""


class FhirError(ConnectorError):
    """A FHIR interaction failed."""

    def __init__(self, message: str, *, status: int | None = None, url: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.url = url


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
    """The association was refused, aborted or timed out after every retry."""


class DicomInvalid(PacsError):
    """A DICOM file or dataset lacks what the pipeline needs; names the file or UID."""
