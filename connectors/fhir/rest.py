"""A FHIR R4 REST server as a :class:`~connectors.fhir.base.FhirSource`.

Per patient: ``Patient/<id>``, then Observation (LOINC list, date window), Condition,
MedicationRequest, MedicationStatement, DocumentReference (attachment text inline or
fetched from ``Binary``/URL on the same server), ImagingStudy and Encounter searches,
each paged through its ``next`` links; the searches of one patient run concurrently
(bounded by ``max_concurrency`` across all threads).  A resource that does not parse is
skipped with a warning naming its type and id; a search that keeps failing after every
retry makes the whole patient fail with one error naming the patient.

Build one with :func:`from_settings` (plain arguments; ``cds`` holds the glue).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import httpx
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.group import Group
from fhir.resources.R4B.patient import Patient

from connectors.errors import FhirAuthError, FhirError, ResourceNotFound
from connectors.fhir._attachments import (
    AttachmentUnreadable,
    attachment_text,
    binary_id,
    decode_text,
)
from connectors.fhir._auth import BearerAuth, SmartBackendAuth
from connectors.fhir._client import EntryResult, FhirRestClient, SearchPage, WriteResult
from connectors.fhir._http import FhirHttp, NoAuth
from connectors.fhir._parse import parse_resource, to_json
from connectors.fhir.base import PatientRecord

__all__ = [
    "BearerAuth",
    "EntryResult",
    "FhirHttp",
    "SmartBackendAuth",
    "FhirRestClient",
    "FhirRestSource",
    "WriteResult",
    "from_settings",
    "LOINC",
    "parse_resource",
    "to_json",
]

log = logging.getLogger("connectors.fhir.rest")

LOINC = "http://loinc.org"
#: LOINC codes per Observation search request (keeps URLs well under common limits).
CODES_PER_SEARCH = 100
T = TypeVar("T")

# record attribute <- resource type searched by ``subject=Patient/<id>``
PATIENT_SEARCHES: tuple[tuple[str, str], ...] = (
    ("conditions", "Condition"),
    ("medication_requests", "MedicationRequest"),
    ("medication_statements", "MedicationStatement"),
    ("documents", "DocumentReference"),
    ("imaging_studies", "ImagingStudy"),
    ("encounters", "Encounter"),
)


class FhirRestSource:
    """Patient data from a FHIR R4 REST server.

    Args:
        client: the REST client (auth, retries, paging).
        max_concurrency: searches of one patient run on this many threads.
        read_capabilities: read the CapabilityStatement now (fail fast on a wrong URL).
    """

    def __init__(
        self, client: FhirRestClient, *, max_concurrency: int = 4, read_capabilities: bool = True
    ) -> None:
        self.client = client
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="fhir")
        self.max_concurrency = max_concurrency
        if read_capabilities:
            try:
                client.capabilities()
            except BaseException:
                self._pool.shutdown(wait=False)
                raise

    @property
    def http(self) -> FhirHttp:
        return self.client.http

    # -------------------------------------------------------------- cohort
    def cohort_patient_ids(self, cohort: str) -> list[str]:
        """Patient ids of ``all``, ``group:<id>`` (Group.member) or ``search:<query>``.

        Raises:
            ValueError: an unknown cohort form.
            ResourceNotFound: the Group does not exist.
        """
        if cohort == "all":
            return self.client.search_ids("Patient", {})
        if cohort.startswith("group:"):
            gid = cohort.split(":", 1)[1].strip()
            group = self.client.read("Group", gid)
            assert isinstance(group, Group)
            ids: list[str] = []
            for member in group.member or []:
                ref = str(member.entity.reference or "")
                if member.inactive:
                    continue
                kind, _, pid = ref.rpartition("/")
                if kind.endswith("Patient") and pid:
                    ids.append(pid)
                else:
                    log.warning(
                        "Group/%s: member %s is not a Patient reference; skipped",
                        gid,
                        ref or "(no reference)",
                    )
            return list(dict.fromkeys(ids))
        if cohort.startswith("search:"):
            query = cohort.split(":", 1)[1].lstrip("?")
            params = dict(httpx.QueryParams(query))
            return self.client.search_ids("Patient", params)
        raise ValueError(f"cohort must be 'all', 'group:<id>' or 'search:<query>', got {cohort!r}")

    # -------------------------------------------------------------- one patient
    def patient_record(
        self,
        patient_id: str,
        *,
        loinc_codes: tuple[str, ...] = (),
        since: dt.date | None = None,
    ) -> PatientRecord:
        """Pull one patient (see the module docstring).

        Raises:
            ResourceNotFound: no such Patient.
            FhirServerError / FhirAuthError / FhirError: a request kept failing; the
                message starts with ``Patient/<id>``.
        """
        label = f"Patient/{patient_id}"
        patient = cast(Patient, self._guard(label, lambda: self.client.read("Patient", patient_id)))
        record = PatientRecord(patient=patient)
        jobs: list[tuple[str, Callable[[], SearchPage]]] = []
        for chunk in _chunks(loinc_codes, CODES_PER_SEARCH) if loinc_codes else [()]:
            params: dict[str, str | list[str]] = {"subject": f"Patient/{patient_id}"}
            if chunk:
                params["code"] = ",".join(f"{LOINC}|{c}" for c in chunk)
            if since is not None:
                params["date"] = f"ge{since.isoformat()}"
            jobs.append(("observations", _search(self.client, "Observation", params, label)))
        for attr, rtype in PATIENT_SEARCHES:
            if self.client.supports(rtype):
                jobs.append(
                    (attr, _search(self.client, rtype, {"subject": f"Patient/{patient_id}"}, label))
                )
            else:
                record.warnings.append(f"{rtype}: not searchable on this server; not pulled")
        futures = [(attr, self._pool.submit(job)) for attr, job in jobs]
        error: FhirError | None = None
        for attr, fut in futures:
            try:
                page = fut.result()
            except FhirError as exc:
                error = error or exc
                continue
            getattr(record, attr).extend(page.matches)
            record.warnings.extend(page.warnings)
        if error is not None:
            raise _with_label(error, label)
        record.observations = _unique(record.observations)
        for doc in record.documents:
            try:
                self._read_document(cast(DocumentReference, doc), record)
            except FhirError as exc:
                raise _with_label(exc, label) from None
        return record

    def iter_patient_records(
        self,
        patient_ids: Iterable[str],
        *,
        loinc_codes: tuple[str, ...] = (),
        since: dt.date | None = None,
        workers: int | None = None,
    ) -> Iterator[tuple[str, PatientRecord | FhirError]]:
        """``(patient_id, record or the error that stopped it)`` for each patient, in
        order; one patient's failure never stops the others."""
        ids = list(patient_ids)

        def one(pid: str) -> PatientRecord | FhirError:
            try:
                return self.patient_record(pid, loinc_codes=loinc_codes, since=since)
            except FhirError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=workers or self.max_concurrency) as pool:
            yield from zip(ids, pool.map(one, ids), strict=True)

    # -------------------------------------------------------------- documents
    def _read_document(self, doc: DocumentReference, record: PatientRecord) -> None:
        key = f"DocumentReference/{doc.id}"
        parts: list[str] = []
        for i, content in enumerate(doc.content or []):
            att = content.attachment
            try:
                if att.data is None and att.url:
                    found = self._fetch_attachment(str(att.url), key, i)
                    if found is None:
                        record.warnings.append(
                            f"{key}: attachment {i} not read (not found or on another server)"
                        )
                        continue
                    raw, ctype = found
                    parts.append(decode_text(raw, att.contentType or ctype))
                else:
                    parts.append(attachment_text(att, lambda _bid: None))
            except AttachmentUnreadable as exc:
                record.warnings.append(f"{key}: attachment {i} not read ({exc})")
        if parts:
            record.document_texts[key] = "\n".join(p for p in parts if p)

    def _fetch_attachment(self, url: str, key: str, i: int) -> tuple[bytes, str | None] | None:
        """Bytes and content type behind an attachment URL on the FHIR server (a Binary
        read as FHIR JSON, or any other URL of the same origin); None when absent."""
        if url.startswith(("http://", "https://")) and not self.http.same_origin(url):
            return None  # never send our token elsewhere
        bid = binary_id(url)
        target = f"Binary/{bid}" if bid and not url.startswith(("http:", "https:")) else url
        try:
            resp = self.http.request(
                "GET",
                target,
                what=f"{key} attachment {i}",
                headers={"Accept": "application/fhir+json, */*"},
            )
        except ResourceNotFound:
            return None
        rtype = resp.headers.get("Content-Type", "")
        if rtype.split(";")[0].strip().lower() in ("application/fhir+json", "application/json"):
            body = self.http.decode(resp, f"{key} attachment {i}")
            if body.get("resourceType") == "Binary":
                raw = _b64(str(body.get("data", "")))
                if raw is None:
                    raise AttachmentUnreadable(f"Binary/{body.get('id')} data is not base64")
                ctype = body.get("contentType")
                return raw, str(ctype) if ctype else None
        return resp.content, rtype or None

    # -------------------------------------------------------------- misc
    @staticmethod
    def _guard(label: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except FhirError as exc:
            raise _with_label(exc, label) from None

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.client.http.close()

    def __enter__(self) -> FhirRestSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _search(
    client: FhirRestClient, rtype: str, params: dict[str, str | list[str]], label: str
) -> Callable[[], SearchPage]:
    return lambda: client.search(rtype, params, what=f"{label}: {rtype} search")


def _with_label(exc: FhirError, label: str) -> FhirError:
    msg = str(exc)
    if msg.startswith(label):
        return exc
    new = type(exc)(f"{label}: {msg}", status=exc.status, url=exc.url)
    return new


def _unique(items: list[Any]) -> list[Any]:
    seen: set[str] = set()
    out = []
    for item in items:
        key = str(getattr(item, "id", "") or id(item))
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _chunks(items: tuple[str, ...], n: int) -> list[tuple[str, ...]]:
    return [items[i : i + n] for i in range(0, len(items), n)]


def _b64(data: Any) -> bytes | None:
    if isinstance(data, bytes):
        return data
    try:
        return base64.b64decode(str(data), validate=False)
    except (binascii.Error, ValueError):
        return None


def from_settings(
    *,
    base_url: str,
    auth: str = "none",
    token_url: str = "",
    client_id: str = "",
    private_key_file: str = "",
    key_alg: str = "RS384",
    key_id: str = "",
    scope: str = "system/*.rs",
    bearer_token: str = "",
    timeout_s: float = 30.0,
    max_concurrency: int = 4,
    max_retries: int = 4,
    backoff_s: float = 0.5,
    max_wait_s: float = 60.0,
    page_size: int = 200,
    read_capabilities: bool = True,
    transport: httpx.BaseTransport | None = None,
) -> FhirRestSource:
    """Build a :class:`FhirRestSource` from plain configuration values.

    Raises:
        FhirAuthError: incomplete or unusable credentials for the chosen ``auth``.
        FhirError: the server cannot be reached or is not FHIR R4 (capabilities read).
    """
    if not base_url:
        raise FhirError("fhir.base_url is empty")
    http = FhirHttp(
        base_url,
        timeout_s=timeout_s,
        max_retries=max_retries,
        backoff_s=backoff_s,
        max_wait_s=max_wait_s,
        max_concurrency=max_concurrency,
        transport=transport,
    )
    try:
        return _build(
            http,
            auth,
            token_url,
            client_id,
            private_key_file,
            key_alg,
            key_id,
            scope,
            bearer_token,
            page_size,
            max_concurrency,
            read_capabilities,
        )
    except BaseException:
        http.close()
        raise


def _build(
    http: FhirHttp,
    auth: str,
    token_url: str,
    client_id: str,
    private_key_file: str,
    key_alg: str,
    key_id: str,
    scope: str,
    bearer_token: str,
    page_size: int,
    max_concurrency: int,
    read_capabilities: bool,
) -> FhirRestSource:
    if auth == "bearer":
        http.auth = BearerAuth(bearer_token)
    elif auth == "smart-backend":
        http.auth = SmartBackendAuth(
            http,
            client_id=client_id,
            private_key=private_key_file,
            alg=key_alg,
            scope=scope,
            token_url=token_url,
            key_id=key_id,
        )
    elif auth == "none":
        http.auth = NoAuth()
    else:
        raise FhirAuthError(f"fhir.auth must be none, bearer or smart-backend, got {auth!r}")
    client = FhirRestClient(http, page_size=page_size)
    return FhirRestSource(
        client, max_concurrency=max_concurrency, read_capabilities=read_capabilities
    )
