"""The CDS Hooks request body, checked against the 2.0 specification ("Calling a CDS Service").

A body that breaks the specification (not a JSON object, a REQUIRED field missing or of
the wrong type, ``fhirAuthorization`` without ``fhirServer``, a hook other than the one the
service is registered for) raises :class:`BadHookRequest` naming the field: HTTP 400.
Prefetch *values* are not judged here: bad patient data never make a request malformed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cds.hooks.errors import BadHookRequest
from cds.hooks.services import ServiceDefinition
from connectors.fhir.outbound import OriginPolicy

#: FHIR logical id: 1-64 of [A-Za-z0-9.-] (R4 "id" datatype); used with ``fullmatch``.
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")

#: Marks a prefetch key the client did not send (as opposed to one sent as null).
ABSENT = object()


@dataclass(frozen=True)
class FhirAuthorization:
    """The OAuth 2.0 bearer token the EHR hands to the service for its FHIR server.

    Args:
        access_token: the token itself (never logged).
        token_type: "Bearer".
        expires_in: lifetime in seconds.
        scope: granted SMART scopes.
        subject: the service's client id at the EHR's authorization server.
        patient: the patient the token is restricted to, if any.
    """

    access_token: str
    token_type: str
    expires_in: int | None
    scope: str
    subject: str
    patient: str | None = None

    def __repr__(self) -> str:  # keep the token out of logs and tracebacks
        return f"FhirAuthorization(subject={self.subject!r}, scope={self.scope!r})"


@dataclass
class HookRequest:
    """A validated call of one CDS service.

    Args:
        hook: the hook that triggered the call.
        hook_instance: the call's UUID.
        patient_id: ``context.patientId``.
        user_id: ``context.userId`` ("Practitioner/123"), or None.
        encounter_id: ``context.encounterId``, or None.
        fhir_server: base URL of the EHR's FHIR server, or None.
        fhir_authorization: the bearer token for it, or None.
        prefetch: key -> JSON value as sent (None when sent as null); absent keys are
            not in the dict.
    """

    hook: str
    hook_instance: str
    patient_id: str
    user_id: str | None
    encounter_id: str | None
    fhir_server: str | None
    fhir_authorization: FhirAuthorization | None
    prefetch: dict[str, Any] = field(default_factory=dict)

    def prefetch_value(self, key: str) -> Any:
        """The value sent under ``key``; :data:`ABSENT` when the key was not sent."""
        return self.prefetch.get(key, ABSENT)


def _str_field(obj: dict[str, Any], name: str, where: str, *, required: bool) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise BadHookRequest(f"{where}{name} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadHookRequest(f"{where}{name} must be a non-empty string")
    return value


def parse_hook_request(body: Any, service: ServiceDefinition) -> HookRequest:
    """Validate ``body`` (decoded JSON) for ``service``; raises :class:`BadHookRequest`."""
    if not isinstance(body, dict):
        raise BadHookRequest("the request body must be a JSON object")
    hook = _str_field(body, "hook", "", required=True)
    if hook != service.hook:
        raise BadHookRequest(
            f"hook {hook!r} does not match service {service.id} (registered for {service.hook})"
        )
    hook_instance = _str_field(body, "hookInstance", "", required=True)
    context = body.get("context")
    if not isinstance(context, dict):
        raise BadHookRequest("context is required and must be an object")
    for name in service.required_context:
        _str_field(context, name, "context.", required=True)
    patient_id = str(context["patientId"])
    if not _FHIR_ID.fullmatch(patient_id):
        raise BadHookRequest("context.patientId is not a valid FHIR id")
    encounter_id = _str_field(context, "encounterId", "context.", required=False)
    if encounter_id is not None and not _FHIR_ID.fullmatch(encounter_id):
        raise BadHookRequest("context.encounterId is not a valid FHIR id")
    user_id = _str_field(context, "userId", "context.", required=False)

    fhir_server = _str_field(body, "fhirServer", "", required=False)
    if fhir_server is not None and not fhir_server.startswith(("https://", "http://")):
        raise BadHookRequest("fhirServer must be an http(s) URL")
    auth = _parse_authorization(body.get("fhirAuthorization"))
    if auth is not None and fhir_server is None:
        raise BadHookRequest("fhirServer is required when fhirAuthorization is given")

    prefetch = body.get("prefetch")
    if prefetch is None:
        prefetch = {}
    if not isinstance(prefetch, dict):
        raise BadHookRequest("prefetch must be an object")
    return HookRequest(
        hook=str(hook),
        hook_instance=str(hook_instance),
        patient_id=patient_id,
        user_id=user_id,
        encounter_id=encounter_id,
        fhir_server=fhir_server.rstrip("/") if fhir_server else None,
        fhir_authorization=auth,
        prefetch={str(k): v for k, v in prefetch.items()},
    )


def _parse_authorization(value: Any) -> FhirAuthorization | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadHookRequest("fhirAuthorization must be an object")
    where = "fhirAuthorization."
    token = _str_field(value, "access_token", where, required=True)
    token_type = _str_field(value, "token_type", where, required=True)
    if str(token_type).lower() != "bearer":
        raise BadHookRequest("fhirAuthorization.token_type must be 'Bearer'")
    expires_in = value.get("expires_in")
    if expires_in is not None and (isinstance(expires_in, bool) or not isinstance(expires_in, int)):
        raise BadHookRequest("fhirAuthorization.expires_in must be an integer")
    return FhirAuthorization(
        access_token=str(token),
        token_type="Bearer",
        expires_in=expires_in,
        scope=str(value.get("scope") or ""),
        subject=str(value.get("subject") or ""),
        patient=value.get("patient") if isinstance(value.get("patient"), str) else None,
    )


def refuse_fhir_access(req: HookRequest, policy: OriginPolicy) -> str | None:
    """Apply the origin ``policy`` to ``req.fhir_server``.

    When the policy refuses it, the request goes on as if the EHR had given no FHIR
    access (``fhir_server`` and ``fhir_authorization`` are cleared: the token is never
    sent) and the reason is returned for the log; None when the server may be used or
    none was named.
    """
    if req.fhir_server is None:
        return None
    reason = policy.refusal(req.fhir_server)
    if reason is not None:
        req.fhir_server = None
        req.fhir_authorization = None
    return reason
