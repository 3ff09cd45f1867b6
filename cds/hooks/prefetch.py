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

Fetching is bounded: each GET ends by the request's deadline and reads at most
``cds_hooks.fetch_max_bytes``; when the request gives up, the fetches still running are
told to stop (their connection is closed at the next chunk).  A searchset's ``next`` link is
followed only on the ``fhirServer``'s own origin, so the EHR's token goes nowhere else.
At most ``cds_hooks.max_resources_per_key`` resources are read under one key, and parsing
stops when the deadline passes.

Every resource is parsed into its ``fhir.resources.R4B`` model.  One that does not parse,
has an unexpected type or belongs to another patient is dropped with a warning naming its
type and id; nothing here raises on bad patient data.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
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
from connectors.fhir.outbound import bounded_get, same_origin

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
    trust_env=False,  # no proxy or netrc credentials picked up from the environment
)


@dataclass(frozen=True)
class FetchLimits:
    """Bounds on what one hook call may read (``[cds_hooks]`` settings).

    Args:
        max_bytes: largest body of one FHIR response.
        max_resources_per_key: resources read under one prefetch key (prefetched or
            fetched); the rest are dropped with a warning.
    """

    max_bytes: int = 8_388_608
    max_resources_per_key: int = 2000


class _GaveUp(Exception):
    """The request's deadline passed or it was cancelled while absorbing data."""


@dataclass
class GatheredData:
    """What the service could learn about the patient during this request.

    Args:
        record: the typed resources.
        key_status: prefetch key -> "prefetch", "null", "operation-outcome", "fhir",
            "fhir-error", "timeout" or "missing" (absent and no FHIR access).
        patient_found: whether a Patient resource with the context's id was obtained.
        fhir_unreachable: nothing was prefetched, and every key fetched from
            ``fhirServer`` failed (connection, HTTP error, deadline).
    """

    record: PatientRecord
    key_status: dict[str, str] = field(default_factory=dict)
    patient_found: bool = False
    fhir_unreachable: bool = False

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


def gather(
    req: HookRequest,
    service: ServiceDefinition,
    deadline: Deadline,
    limits: FetchLimits | None = None,
) -> GatheredData:
    """Prefetch first, then the FHIR server for absent keys; never raises on bad data."""
    limits = limits or FetchLimits()
    cancel = threading.Event()
    record = PatientRecord(patient=Patient(id=req.patient_id))
    out = GatheredData(record=record)
    to_fetch: list[PrefetchKey] = []
    try:
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
            _absorb(out, pk, [value], req, deadline, limits)
        if to_fetch:
            _fetch_all(out, to_fetch, req, deadline, limits, cancel)
        read_document_texts(record, req, deadline)  # attachments by url, PDF, C-CDA
    except _GaveUp:
        record.warnings.append("the time budget ended while reading the patient's data")
    finally:
        cancel.set()  # fetches still running stop at their next chunk
    return out


def _fetch_all(
    out: GatheredData,
    to_fetch: list[PrefetchKey],
    req: HookRequest,
    deadline: Deadline,
    limits: FetchLimits,
    cancel: threading.Event,
) -> None:
    futures = {
        pk.key: _FETCH_POOL.submit(_fetch_key, pk, req, deadline, limits, cancel) for pk in to_fetch
    }
    failed = 0
    try:
        for pk in to_fetch:
            try:
                pages = futures[pk.key].result(timeout=deadline.remaining_s())
            except FutureTimeout:
                out.key_status[pk.key] = "timeout"
                out.record.warnings.append(f"FHIR {pk.key}: not fetched within the time budget")
                failed += 1
                continue
            except (httpx.HTTPError, ValueError, RecursionError) as exc:
                out.key_status[pk.key] = "fhir-error"
                out.record.warnings.append(f"FHIR {pk.key}: {_describe_http_error(exc)}")
                failed += 1
                continue
            out.key_status[pk.key] = "fhir"
            _absorb(out, pk, pages, req, deadline, limits)
    finally:
        for future in futures.values():
            future.cancel()  # not started yet: never starts
    nothing_prefetched = "prefetch" not in out.key_status.values()
    out.fhir_unreachable = nothing_prefetched and failed == len(to_fetch)


def _fetch_key(
    pk: PrefetchKey,
    req: HookRequest,
    deadline: Deadline,
    limits: FetchLimits,
    cancel: threading.Event,
) -> list[Any]:
    """GET the filled template (and next pages on the same origin) with the EHR's token."""
    assert req.fhir_server is not None and req.fhir_authorization is not None
    headers = {
        "Authorization": f"Bearer {req.fhir_authorization.access_token}",
        "Accept": "application/fhir+json",
    }
    url: str | None = f"{req.fhir_server}/{fill_template(pk.template, req)}"
    pages: list[Any] = []
    while url and len(pages) < MAX_PAGES:
        resp = bounded_get(
            _HTTP,
            url,
            headers=headers,
            deadline=deadline.at(),
            max_bytes=limits.max_bytes,
            cancel=cancel,
        )
        if resp.status_code == 404 and not pk.search:
            return pages  # the instance does not exist: nothing to add
        if resp.status_code >= 400:
            raise _StatusError(resp.status_code)
        pages.append(json.loads(resp.content))
        url = _next_link(pages[-1]) if pk.search else None
        if url is not None and not same_origin(url, req.fhir_server):
            log.warning(
                "prefetch %s: next link on another origin not followed (patient=%s)",
                pk.key,
                req.patient_id,
            )
            url = None
    return pages


class _StatusError(httpx.HTTPError):
    """The FHIR server answered with an HTTP error status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def _next_link(bundle: Any) -> str | None:
    if not isinstance(bundle, dict):
        return None
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


def _describe_http_error(exc: Exception) -> str:
    if isinstance(exc, _StatusError):
        return f"HTTP {exc.status}"
    return type(exc).__name__


def _absorb(
    out: GatheredData,
    pk: PrefetchKey,
    values: list[Any],
    req: HookRequest,
    deadline: Deadline,
    limits: FetchLimits,
) -> None:
    """Parse prefetch values or fetched pages (resources or Bundles) into the record,
    at most ``limits.max_resources_per_key`` resources, until the deadline."""
    budget = limits.max_resources_per_key
    for value in values:
        if not isinstance(value, dict):
            out.record.warnings.append(f"prefetch {pk.key}: not a FHIR resource, ignored")
            continue
        if value.get("resourceType") != "Bundle":
            items: list[Any] = [value]
        else:
            entries = value.get("entry") or []
            if not isinstance(entries, list):
                out.record.warnings.append(f"prefetch {pk.key}: Bundle.entry is not a list")
                continue
            items = [e.get("resource") if isinstance(e, dict) else None for e in entries]
        for i, res in enumerate(items):
            if budget <= 0:
                out.record.warnings.append(
                    f"prefetch {pk.key}: more than {limits.max_resources_per_key} resources, "
                    "the rest ignored"
                )
                return
            if deadline.expired():
                raise _GaveUp
            if not isinstance(res, dict):
                out.record.warnings.append(f"prefetch {pk.key}: entry {i} has no resource")
                continue
            budget -= 1
            _absorb_resource(out, pk, res, req)


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
