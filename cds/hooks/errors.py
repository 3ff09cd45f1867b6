"""Errors of the CDS Hooks boundary.

Each one carries the HTTP status it is answered with; the blueprint turns it into a
JSON body ``{"error": <code>, "message": <text>}`` in one place.  Messages name fields,
service ids and resource ids, never patient names or other PHI.
"""

from __future__ import annotations

from cds.errors import MprtmError


class HooksError(MprtmError):
    """Base class of the errors answered by the CDS Hooks endpoints."""

    status = 500
    code = "internal-error"


class BadHookRequest(HooksError):
    """The request body is not a valid CDS Hooks request (HTTP 400); names the field."""

    status = 400
    code = "bad-request"


class UnknownService(HooksError):
    """No CDS service with that id is offered here (HTTP 404)."""

    status = 404
    code = "unknown-service"


class UnknownCard(HooksError):
    """Feedback names a card this service never issued (HTTP 404)."""

    status = 404
    code = "unknown-card"


class Unauthorized(HooksError):
    """The bearer JWT is missing or fails verification (HTTP 401); says why."""

    status = 401
    code = "unauthorized"


class PreconditionFailed(HooksError):
    """The data the service needs were neither prefetched nor reachable (HTTP 412)."""

    status = 412
    code = "precondition-failed"


class DataUnavailable(MprtmError):
    """Patient data could not be read (FHIR fallback failed, or nothing usable).

    Never answered as an error: the service turns it into an info card.
    """


class ScoringError(MprtmError):
    """The on-demand scorer could not score this patient; names the patient id."""
