"""The embedded-default FHIR source: a folder in Bulk Data NDJSON layout.

``Patient.ndjson``, ``Observation.ndjson``, ... (also ``Observation.000.ndjson``,
``Observation_2.ndjson``, ``*.ndjson.gz`` as written by Bulk ``$export`` clients); the
resource type of each line is read from the line itself.  Opening the folder indexes every
line by byte offset, resource type, id and patient reference (``subject``/``patient``);
a patient's resources are parsed into ``fhir.resources.R4B`` objects only when that patient
is pulled, so a 1,000-patient folder opens in about a second.

A line that is not JSON, or a resource that does not parse as R4, is skipped with a
warning naming the file, the line number and the resource id (if it has one).  Folder-level
warnings are in :attr:`NdjsonFolderSource.warnings`; per-patient ones in
:attr:`PatientRecord.warnings`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import json
import logging
import os
import re
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir.resources.R4B.binary import Binary
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError

from connectors.errors import FhirError, FhirInvalidResource, ResourceNotFound
from connectors.fhir import _search
from connectors.fhir._attachments import AttachmentUnreadable, attachment_text
from connectors.fhir.base import PatientRecord

log = logging.getLogger("mprtm.connectors.ndjson")

_MODELS: dict[str, Any] = {
    "Patient": Patient,
    "Observation": Observation,
    "Condition": Condition,
    "MedicationRequest": MedicationRequest,
    "MedicationStatement": MedicationStatement,
    "DocumentReference": DocumentReference,
    "ImagingStudy": ImagingStudy,
    "Encounter": Encounter,
    "Medication": Medication,
    "Binary": Binary,
}
#: Resource types kept by id (looked up by reference, not by patient).
_BY_ID_TYPES = frozenset({"Patient", "Group", "Binary", "Medication"})
#: Elements that point at the patient a resource belongs to, in order of preference.
_PATIENT_ELEMENTS = ("subject", "patient", "beneficiary")
_ID_RE = re.compile(rb'"id"\s*:\s*"([^"]{1,64})"')
_REF_RE = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/.*)?$")


class UnsupportedSearch(FhirError):
    """A cohort ``search:`` query uses a parameter the NDJSON folder cannot evaluate."""


@dataclass(frozen=True, slots=True)
class _Loc:
    file: int
    offset: int
    length: int
    line: int
    rtype: str


def patient_id_from_reference(ref: str | None) -> str | None:
    """``Patient/123``, ``https://x/fhir/Patient/123/_history/2`` or ``urn:uuid:123`` -> 123."""
    if not ref:
        return None
    if ref.startswith("urn:uuid:"):
        return ref[9:]
    m = _REF_RE.search(ref)
    return m.group(1) if m else None


def _patient_ref(obj: dict[str, Any]) -> str | None:
    for key in _PATIENT_ELEMENTS:
        val = obj.get(key)
        if isinstance(val, dict):
            pid = patient_id_from_reference(val.get("reference"))
            if pid:
                return pid
    return None


class NdjsonFolderSource:
    """FhirSource over a Bulk Data NDJSON folder.

    Args:
        folder: the folder holding ``<Type>.ndjson`` files (searched non-recursively).

    Raises:
        FhirError: the folder does not exist or holds no ``.ndjson`` file.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FhirError(f"NDJSON folder not found: {self.folder}")
        paths = sorted(
            p
            for p in self.folder.iterdir()
            if p.is_file() and (p.name.endswith(".ndjson") or p.name.endswith(".ndjson.gz"))
        )
        if not paths:
            raise FhirError(f"no .ndjson files in {self.folder}")
        self.files = paths
        self.warnings: list[str] = []
        # per file: its decompressed bytes (.gz) or an open descriptor read with pread
        self._store: list[bytes | int] = []
        self._finalizer = weakref.finalize(self, _close_fds, self._store)
        self._patients: dict[str, _Loc] = {}
        self._by_patient: dict[str, list[_Loc]] = {}
        self._by_id: dict[tuple[str, str], _Loc] = {}
        self._counts: dict[str, int] = {}
        for i, path in enumerate(paths):
            self._index_file(i, path)

    # -- indexing ---------------------------------------------------------------------------

    def _open(self, path: Path) -> bytes:
        """The file's bytes for indexing; keeps what later reads need in ``_store``.

        Plain files stay open as descriptors read with ``os.pread`` (thread-safe, and a
        file rewritten in place gives short reads, never a crash as an mmap would).
        """
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as gz:
                data = gz.read()
            self._store.append(data)
            return data
        fd = os.open(path, os.O_RDONLY)
        self._store.append(fd)
        size = os.fstat(fd).st_size
        chunks: list[bytes] = []
        offset = 0
        while offset < size:
            chunk = os.pread(fd, size - offset, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)

    def _warn(self, msg: str) -> None:
        self.warnings.append(msg)
        log.warning("%s", msg)

    def _index_file(self, index: int, path: Path) -> None:
        buf = self._open(path)
        size = len(buf)
        offset = 0
        line_no = 0
        while offset < size:
            end = buf.find(b"\n", offset)
            if end < 0:
                end = size
            line_no += 1
            raw = buf[offset:end]
            start = offset
            offset = end + 1
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                m = _ID_RE.search(raw)
                where = f" (id {m.group(1).decode(errors='replace')})" if m else ""
                self._warn(f"{path.name} line {line_no}{where}: not valid JSON, skipped")
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get("resourceType"), str):
                self._warn(f"{path.name} line {line_no}: not a FHIR resource, skipped")
                continue
            rtype: str = obj["resourceType"]
            rid = obj.get("id")
            loc = _Loc(index, start, end - start, line_no, rtype)
            self._counts[rtype] = self._counts.get(rtype, 0) + 1
            if rtype == "Patient":
                if not isinstance(rid, str) or not rid:
                    self._warn(f"{path.name} line {line_no}: Patient without id, skipped")
                    continue
                if rid in self._patients:
                    self._warn(f"{path.name} line {line_no}: Patient/{rid} repeated; last kept")
                self._patients[rid] = loc
                self._by_id[(rtype, rid)] = loc
                continue
            if rtype in _BY_ID_TYPES and isinstance(rid, str):
                self._by_id[(rtype, rid)] = loc
            pid = _patient_ref(obj)
            if pid is not None:
                self._by_patient.setdefault(pid, []).append(loc)

    def _raw(self, loc: _Loc) -> bytes:
        stored = self._store[loc.file]
        if isinstance(stored, bytes):
            return stored[loc.offset : loc.offset + loc.length]
        return os.pread(stored, loc.length, loc.offset)

    def _json(self, loc: _Loc, warnings: list[str] | None = None) -> dict[str, Any] | None:
        """The indexed line as JSON, or None (with a warning) when the file changed under
        the open source so that the line is no longer the resource that was indexed."""
        try:
            obj = json.loads(self._raw(loc))
        except (ValueError, UnicodeDecodeError):
            obj = None
        if isinstance(obj, dict) and obj.get("resourceType") == loc.rtype:
            return obj
        msg = f"{self._where(loc)}: changed since the folder was opened; {loc.rtype} skipped"
        if warnings is not None:
            warnings.append(msg)
        self._warn(msg)
        return None

    def _where(self, loc: _Loc) -> str:
        return f"{self.files[loc.file].name} line {loc.line}"

    def _parse(self, loc: _Loc, obj: dict[str, Any], warnings: list[str]) -> Any | None:
        model = _MODELS[loc.rtype]
        try:
            return model.model_validate(obj)
        except ValidationError as exc:
            fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
            rid = obj.get("id", "?")
            msg = (
                f"{loc.rtype}/{rid} ({self._where(loc)}): skipped, does not parse as R4 "
                f"({', '.join(fields[:5]) or 'structure'})"
            )
            warnings.append(msg)
            log.warning("%s", msg)
            return None

    # -- FhirSource -------------------------------------------------------------------------

    @property
    def resource_counts(self) -> dict[str, int]:
        """Lines indexed per resource type."""
        return dict(self._counts)

    def patient_resources(self, patient_id: str, rtype: str) -> Iterator[dict[str, Any]]:
        """One patient's ``rtype`` resources as parsed JSON (cohort search)."""
        for loc in self._by_patient.get(patient_id, ()):
            if loc.rtype == rtype:
                obj = self._json(loc)
                if obj is not None:
                    yield obj

    def patient_json(self, patient_id: str) -> dict[str, Any]:
        loc = self._patients.get(patient_id)
        if loc is None:
            raise ResourceNotFound(f"Patient/{patient_id} not in {self.folder}")
        obj = self._json(loc)
        if obj is None:
            raise FhirInvalidResource(f"Patient/{patient_id}: {self._where(loc)} changed")
        return obj

    def cohort_patient_ids(self, cohort: str) -> list[str]:
        """Patient ids of ``all``, ``group:<id>`` or ``search:<query>`` (see _search)."""
        cohort = cohort.strip()
        if cohort == "all":
            return list(self._patients)
        if cohort.startswith("group:"):
            gid = cohort[6:].strip()
            loc = self._by_id.get(("Group", gid))
            if loc is None:
                raise ResourceNotFound(f"Group/{gid} not in {self.folder}")
            group = self._json(loc)
            if group is None:
                raise FhirInvalidResource(f"Group/{gid}: {self._where(loc)} changed")
            out: list[str] = []
            for member in group.get("member") or []:
                if member.get("inactive"):
                    continue
                pid = patient_id_from_reference((member.get("entity") or {}).get("reference"))
                if pid is None:
                    self._warn(f"Group/{gid}: a member is not a Patient reference; skipped")
                    continue
                if pid not in self._patients:
                    # kept: the batch reports it as failed (not found) instead of losing it
                    self._warn(f"Group/{gid}: member Patient/{pid} is not in the folder")
                if pid not in out:
                    out.append(pid)
            return out
        if cohort.startswith("search:"):
            try:
                return _search.run(self, cohort[7:].strip())
            except _search.Unsupported as exc:
                raise UnsupportedSearch(str(exc)) from None
        raise FhirError(f"unknown cohort {cohort!r}: use all, group:<id> or search:<query>")

    def has_patient(self, patient_id: str) -> bool:
        return patient_id in self._patients

    def patient_record(
        self,
        patient_id: str,
        *,
        loinc_codes: tuple[str, ...] = (),
        since: dt.date | None = None,
    ) -> PatientRecord:
        loc = self._patients.get(patient_id)
        if loc is None:
            raise ResourceNotFound(f"Patient/{patient_id} not in {self.folder}")
        warnings: list[str] = []
        pobj = self._json(loc, warnings)
        patient = self._parse(loc, pobj, warnings) if pobj is not None else None
        if patient is None:
            raise FhirInvalidResource(f"Patient/{patient_id} does not parse as R4: {warnings[0]}")
        record = PatientRecord(patient=patient, warnings=warnings)
        codes = frozenset(loinc_codes)
        med_refs: set[str] = set()
        for rloc in self._by_patient.get(patient_id, ()):
            if rloc.rtype not in _MODELS or rloc.rtype in ("Medication", "Binary"):
                continue
            obj = self._json(rloc, warnings)
            if obj is None:
                continue
            if rloc.rtype == "Observation" and not _observation_wanted(obj, codes, since):
                continue
            res = self._parse(rloc, obj, warnings)
            if res is None:
                continue
            if rloc.rtype == "Observation":
                record.observations.append(res)
            elif rloc.rtype == "Condition":
                record.conditions.append(res)
            elif rloc.rtype == "MedicationRequest":
                record.medication_requests.append(res)
                med_refs.update(_med_ref(obj))
            elif rloc.rtype == "MedicationStatement":
                record.medication_statements.append(res)
                med_refs.update(_med_ref(obj))
            elif rloc.rtype == "DocumentReference":
                record.documents.append(res)
                self._read_document(res, record)
            elif rloc.rtype == "ImagingStudy":
                record.imaging_studies.append(res)
            elif rloc.rtype == "Encounter":
                record.encounters.append(res)
        for ref in sorted(med_refs):
            mloc = self._by_id.get(("Medication", ref.split("/", 1)[1]))
            if mloc is None:
                warnings.append(f"{ref}: referenced but not in the folder")
                continue
            mobj = self._json(mloc, warnings)
            med = self._parse(mloc, mobj, warnings) if mobj is not None else None
            if med is not None:
                record.medications[ref] = med
        return record

    def _binary(self, bid: str) -> tuple[bytes, str | None] | None:
        loc = self._by_id.get(("Binary", bid))
        if loc is None:
            return None
        obj = self._json(loc)
        res = self._parse(loc, obj, []) if obj is not None else None
        if res is None or res.data is None:
            return None
        return bytes(res.data), res.contentType

    def _read_document(self, doc: DocumentReference, record: PatientRecord) -> None:
        key = f"DocumentReference/{doc.id}"
        parts: list[str] = []
        for content in doc.content or []:
            try:
                parts.append(attachment_text(content.attachment, self._binary))
            except AttachmentUnreadable as exc:
                record.warnings.append(f"{key}: attachment not read ({exc})")
        if parts:
            record.document_texts[key] = "\n".join(p for p in parts if p)

    def close(self) -> None:
        """Release the open files (also done when the source is garbage-collected)."""
        self._finalizer()

    def __enter__(self) -> NdjsonFolderSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_fds(store: list[bytes | int]) -> None:
    for item in store:
        if isinstance(item, int):
            with contextlib.suppress(OSError):
                os.close(item)
    store.clear()


def _med_ref(obj: dict[str, Any]) -> list[str]:
    ref = (obj.get("medicationReference") or {}).get("reference")
    if isinstance(ref, str) and ref.startswith("Medication/"):
        return [ref.split("/_history/")[0]]
    return []


def _observation_wanted(obj: dict[str, Any], codes: frozenset[str], since: dt.date | None) -> bool:
    """Cheap pre-filter on the raw JSON, so unwanted Observations are never parsed."""
    if codes:
        found = {c.get("code") for c in (obj.get("code") or {}).get("coding") or []}
        for comp in obj.get("component") or []:
            found.update(c.get("code") for c in (comp.get("code") or {}).get("coding") or [])
        if not found & codes:
            return False
    if since is not None:
        when = obj.get("effectiveDateTime") or obj.get("effectiveInstant") or obj.get("issued")
        period = obj.get("effectivePeriod")
        if not when and isinstance(period, dict):
            when = period.get("end") or period.get("start")
        if isinstance(when, str):
            day = _last_day(when)
            return day is None or day >= since
    return True


def _last_day(value: str) -> dt.date | None:
    """The last day a FHIR date/dateTime (possibly partial: ``2024``, ``2024-05``) covers."""
    try:
        if len(value) == 4:
            return dt.date(int(value), 12, 31)
        if len(value) == 7:
            year, month = int(value[:4]), int(value[5:7])
            nxt = dt.date(year + month // 12, month % 12 + 1, 1)
            return nxt - dt.timedelta(days=1)
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        return None
