"""Prefetched FHIR data (and the FHIR fallback) turned into a typed :class:`PatientRecord`.

CDS Hooks 2.0 gives each prefetch key three states, and they mean different things:

* **present** with a resource or a searchset Bundle: the data; used as is.
* **null**: the EHR had nothing to put there ("If the CDS Client has no data to populate
  a template prefetch key, the prefetch template key MUST have a value of null"): there is
  nothing to fetch, so the service does not query the FHIR server for it.
* **an OperationOutcome**: the EHR tried and failed; the specification asks clients to send
  one "to prevent the CDS Service from incurring an unneeded follow-up query": not refetched.
* **absent**: the EHR chose not to (or could not) satisfy it; the service fetches it itself
  from ``fhirServer`` with the ``fhirAuthorization`` bearer token, within the request's
  time budget.  Without a token the key stays missing.

Every resource is parsed into its ``fhir.resources.R4B`` model.  One that does not parse,
has an unexpected type or belongs to another patient is dropped with a warning naming its
type and id; nothing here raises on bad patient data.
"""

from __future__ import annotations

import base64
import binascii
import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import httpx
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.patient import Patient

from cds.hooks._deadline import Deadline
from cds.hooks._notes import read_document_texts
from cds.hooks.request import ABSENT, HookRequest
from cds.hooks.services import ENCOUNTER_TOKEN, PATIENT_TOKEN, PrefetchKey, ServiceDefinition
from connectors.fhir.base import PatientRecord

log = logging.getLogger("mprtm.hooks.prefetch")

#: Pages of a paginated searchset followed at most per key.
MAX_PAGES = 5
#: The record's list attribute for each resource type.
_LIST_ATTR = {
    "Observation": "observations",
    "Condition": "conditions",
    "MedicationRequest": "medication_requests",
    "MedicationStatement": "medication_statements",
    "DocumentReference": "documents",
    "ImagingStudy": "imaging_studies",
    "Encounter": "encounters",
}
#: Where each type names its patient.
_SUBJECT_FIELD = {
    "Observation": "subject",
    "Condition": "subject",
    "MedicationRequest": "subject",
    "MedicationStatement": "subject",
    "DocumentReference": "subject",
    "ImagingStudy": "subject",
    "Encounter": "subject",
}

# FHIR fallback calls run here so several keys are fetched at once under one deadline.
_FETCH_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="hooks-fhir")
_HTTP = httpx.Client(
    timeout=httpx.Timeout(5.0, connect=1.0),
    limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
    follow_redirects=False,
)


@dataclass
class GatheredData:
    """What the service could learn about the patient during this request.

    Args:
        record: the typed resources.
        key_status: prefetch key -> "prefetch", "null", "operation-outcome", "fhir",
            "fhir-error", "timeout" or "missing" (absent and no FHIR access).
        patient_found: whether a Patient resource with the context's id was obtained.
    """

    record: PatientRecord
    key_status: dict[str, str] = field(default_factory=dict)
    patient_found: bool = False

    @property
    def n_resources(self) -> int:
        r = self.record
        return sum(len(getattr(r, a)) for a in _LIST_ATTR.values()) + int(self.patient_found)

    def missing_keys(self) -> list[str]:
        return [k for k, s in self.key_status.items() if s in ("missing", "fhir-error", "timeout")]


def fill_template(template: str, req: HookRequest) -> str:
    url = template.replace(PATIENT_TOKEN, req.patient_id)
    return url.replace(ENCOUNTER_TOKEN, req.encounter_id or "")


def can_fetch(req: HookRequest) -> bool:
    return req.fhir_server is not None and req.fhir_authorization is not None


def gather(req: HookRequest, service: ServiceDefinition, deadline: Deadline) -> GatheredData:
    """Prefetch first, then the FHIR server for absent keys; never raises on bad data."""
    record = PatientRecord(patient=Patient(id=req.patient_id))
    out = GatheredData(record=record)
    to_fetch: list[PrefetchKey] = []
    for pk in service.prefetch:
        value = req.prefetch_value(pk.key)
        if value is ABSENT:
            if can_fetch(req):
                to_fetch.append(pk)
            else:
                out.key_status[pk.key] = "missing"
            continue
        if value is None:
            out.key_status[pk.key] = "null"
            continue
        if isinstance(value, dict) and value.get("resourceType") == "OperationOutcome":
            out.key_status[pk.key] = "operation-outcome"
            record.warnings.append(f"prefetch {pk.key}: the EHR reported an OperationOutcome")
            continue
        out.key_status[pk.key] = "prefetch"
        _absorb(out, pk, value, req)
    if to_fetch:
        futures = {pk.key: _FETCH_POOL.submit(_fetch_key, pk, req, deadline) for pk in to_fetch}
        for pk in to_fetch:
            try:
                pages = futures[pk.key].result(timeout=deadline.remaining_s())
            except FutureTimeout:
                out.key_status[pk.key] = "timeout"
                record.warnings.append(f"FHIR {pk.key}: not fetched within the time budget")
                continue
            except (httpx.HTTPError, ValueError) as exc:
                out.key_status[pk.key] = "fhir-error"
                record.warnings.append(f"FHIR {pk.key}: {_describe_http_error(exc)}")
                continue
            out.key_status[pk.key] = "fhir"
            for page in pages:
                _absorb(out, pk, page, req)
    read_document_texts(record, req, deadline)  # attachments by url, PDF, C-CDA
    return out


def _fetch_key(pk: PrefetchKey, req: HookRequest, deadline: Deadline) -> list[Any]:
    """GET the filled template (and next pages) with the EHR's token; JSON pages."""
    assert req.fhir_server is not None and req.fhir_authorization is not None
    headers = {
        "Authorization": f"Bearer {req.fhir_authorization.access_token}",
        "Accept": "application/fhir+json",
    }
    url: str | None = f"{req.fhir_server}/{fill_template(pk.template, req)}"
    pages: list[Any] = []
    while url and len(pages) < MAX_PAGES:
        timeout = max(0.01, deadline.remaining_s())
        resp = _HTTP.get(url, headers=headers, timeout=timeout)
        if resp.status_code == 404 and not pk.search:
            return pages  # the instance does not exist: nothing to add
        resp.raise_for_status()
        page = resp.json()
        pages.append(page)
        url = _next_link(page) if pk.search else None
    return pages


def _next_link(bundle: Any) -> str | None:
    if not isinstance(bundle, dict):
        return None
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


def _describe_http_error(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


def _absorb(out: GatheredData, pk: PrefetchKey, value: Any, req: HookRequest) -> None:
    """Parse one prefetch value (a resource or a Bundle) into the record."""
    if not isinstance(value, dict):
        out.record.warnings.append(f"prefetch {pk.key}: not a FHIR resource, ignored")
        return
    if value.get("resourceType") == "Bundle":
        entries = value.get("entry") or []
        if not isinstance(entries, list):
            out.record.warnings.append(f"prefetch {pk.key}: Bundle.entry is not a list")
            return
        for i, entry in enumerate(entries):
            res = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(res, dict):
                out.record.warnings.append(f"prefetch {pk.key}: entry {i} has no resource")
                continue
            _absorb_resource(out, pk, res, req)
        return
    _absorb_resource(out, pk, value, req)


def _absorb_resource(
    out: GatheredData, pk: PrefetchKey, raw: dict[str, Any], req: HookRequest
) -> None:
    rtype = raw.get("resourceType")
    rid = raw.get("id")
    label = f"{rtype}/{rid}" if isinstance(rtype, str) else f"prefetch {pk.key} item"
    if rtype == "OperationOutcome":
        out.record.warnings.append(f"prefetch {pk.key}: the EHR reported an OperationOutcome")
        return
    if not isinstance(rtype, str) or rtype not in pk.resource_types:
        out.record.warnings.append(f"{label}: unexpected under prefetch {pk.key}, ignored")
        return
    try:
        resource: Any = get_fhir_model_class(rtype).model_validate(raw)
    except ValueError as exc:
        where = _first_error_location(exc)
        out.record.warnings.append(f"{label}: skipped, does not parse as R4 ({where})")
        return
    if rtype == "Patient":
        if resource.id != req.patient_id:
            out.record.warnings.append(f"{label}: not the patient in context, ignored")
            return
        out.record.patient = resource
        out.patient_found = True
        return
    if rtype == "Medication":  # no subject: kept for the requests that point at it
        out.record.medications[f"Medication/{resource.id}"] = resource
        return
    if not _belongs_to(resource, rtype, req.patient_id):
        out.record.warnings.append(f"{label}: refers to another patient, ignored")
        return
    if rtype == "Encounter" and req.encounter_id and resource.id != req.encounter_id:
        out.record.warnings.append(f"{label}: not the encounter in context, ignored")
        return
    getattr(out.record, _LIST_ATTR[rtype]).append(resource)
    if rtype == "DocumentReference":
        text = _inline_text(resource)
        if text:
            out.record.document_texts[f"DocumentReference/{resource.id}"] = text


def _first_error_location(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            return ".".join(str(p) for p in first.get("loc", ())) or "structure"
        except (IndexError, TypeError, KeyError):
            return "structure"
    return "structure"


def _belongs_to(resource: Any, rtype: str, patient_id: str) -> bool:
    ref = getattr(resource, _SUBJECT_FIELD[rtype], None)
    reference = getattr(ref, "reference", None) if ref is not None else None
    if not reference:
        return False
    return str(reference).split("/_history")[0].endswith(f"Patient/{patient_id}")


def _inline_text(doc: Any) -> str:
    """Plain-text attachments carried inline (base64 ``data``); URLs are not fetched here."""
    parts: list[str] = []
    for content in doc.content or []:
        att = content.attachment
        if att is None or att.data is None:
            continue
        ctype = (att.contentType or "text/plain").split(";")[0].strip().lower()
        if not ctype.startswith("text/"):
            continue
        data = att.data
        try:
            raw = data if isinstance(data, bytes) else base64.b64decode(str(data), validate=False)
            parts.append(raw.decode("utf-8", errors="replace"))
        except (binascii.Error, ValueError):
            continue
    return "\n".join(parts)
