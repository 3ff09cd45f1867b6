"""The AuditEvent (FHIR R4) of each audited access, shaped after IHE BALP.

Every event: ``type`` = audit-event-type ``rest``; ``subtype`` = the RESTful interaction
(``read``, ``search-type``, ``update``, ``operation``); ``action`` C/R/U/E; ``outcome``
0 (success), 4 (minor failure) or 8 (serious failure); one agent that asked (requestor)
and this service as the source; the patient as an entity (type 1 *Person*, role 1
*Patient*).  Only ids go in: never names or clinical values.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

EVENT_TYPE = {
    "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
    "code": "rest",
    "display": "Restful Operation",
}
INTERACTION = "http://hl7.org/fhir/restful-interaction"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
#: identifier system of the local inbox users and of CDS Hooks callers (their ``iss``)
USER_SYSTEM = "urn:mprtm:inbox-user"
ISSUER_SYSTEM = "urn:ietf:rfc:3986"
SERVICE = "M-PRTM CDS"

OUTCOMES = {"success": "0", "minor": "4", "serious": "8"}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _agent(who: dict[str, Any], requestor: bool, role: str = "IRCP") -> dict[str, Any]:
    code = (
        {"system": PARTICIPATION, "code": "IRCP", "display": "information recipient"}
        if role == "IRCP"
        else {"system": DCM, "code": "110153", "display": "Source Role ID"}
    )
    return {"type": {"coding": [code]}, "who": who, "requestor": requestor}


def _patient(patient_id: str) -> dict[str, Any]:
    return {
        "what": {"reference": f"Patient/{patient_id}"},
        "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
        "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
    }


def _event(
    subtype: str,
    action: str,
    outcome: str,
    agents: list[dict[str, Any]],
    entities: list[dict[str, Any]],
    description: str = "",
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": EVENT_TYPE,
        "subtype": [{"system": INTERACTION, "code": subtype}],
        "action": action,
        "recorded": _now(),
        "outcome": OUTCOMES[outcome],
        "agent": agents,
        "source": {
            "observer": {"display": SERVICE},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
        "entity": entities,
    }
    if description:
        event["outcomeDesc"] = description
    return event


def _service(display: str) -> dict[str, Any]:
    return _agent({"display": display}, requestor=False, role="source")


def hook_call_event(
    *, service_id: str, patient_id: str | None, iss: str, outcome: str, detail: str = ""
) -> dict[str, Any]:
    """One CDS Hooks call: the EHR (``iss``) asked ``service_id`` about a patient."""
    caller = (
        {"identifier": {"system": ISSUER_SYSTEM, "value": iss}}
        if iss
        else {"display": "unauthenticated CDS Hooks client"}
    )
    entities = [_patient(patient_id)] if patient_id else []
    entities.append(
        {
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
            "name": f"cds-services/{service_id}",
        }
    )
    return _event(
        "operation", "E", outcome, [_agent(caller, True), _service(SERVICE)], entities, detail
    )


def patient_read_event(*, patient_id: str, reader: str, outcome: str = "success") -> dict[str, Any]:
    """A FHIR read of one patient's record (Patient, Observations, Conditions, ...)."""
    return _event(
        "search-type",
        "E",
        outcome,
        [_agent({"display": reader}, True), _service(SERVICE)],
        [
            _patient(patient_id),
            {
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                "name": "patient record for risk scoring",
            },
        ],
    )


def resource_write_event(
    *,
    patient_id: str,
    resource_type: str,
    resource_id: str | None,
    identifier: str,
    writer: str,
    outcome: str = "success",
) -> dict[str, Any]:
    """A resource about the patient written (RiskAssessment, by identifier)."""
    what: dict[str, Any] = {"identifier": {"value": identifier}}
    if resource_id:
        what["reference"] = f"{resource_type}/{resource_id}"
    return _event(
        "update",
        "U",
        outcome,
        [_agent({"display": writer}, True), _service(SERVICE)],
        [
            _patient(patient_id),
            {
                "what": what,
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            },
        ],
    )


def page_view_event(*, patient_id: str, user: str, page: str = "patient") -> dict[str, Any]:
    """An inbox page showing one patient's data, viewed by ``user``."""
    return _event(
        "read",
        "R",
        "success",
        [_agent({"identifier": {"system": USER_SYSTEM, "value": user}}, True), _service(SERVICE)],
        [_patient(patient_id)],
        f"inbox {page} page",
    )


def inbox_action_event(
    *, patient_id: str, user: str, action: str, alert_id: int, outcome: str = "success"
) -> dict[str, Any]:
    """An inbox action (acknowledge, assign, snooze, resolve) on one of the patient's alerts."""
    return _event(
        "update",
        "U",
        outcome,
        [_agent({"identifier": {"system": USER_SYSTEM, "value": user}}, True), _service(SERVICE)],
        [_patient(patient_id)],
        f"alert {alert_id}: {action}",
    )
