"""Load a Bulk Data NDJSON folder into a FHIR server, keeping every resource's id.

Files are sent in dependency order (Patient, Practitioner, Organization, Location,
Medication, Group, Encounter, then the clinical resources, Binary before
DocumentReference, anything else last) as transaction Bundles of ``PUT Type/id`` entries.
When the server rejects a transaction (400/422: some resource in it is invalid), the same
entries are sent again as a batch, so that each invalid resource is reported by type/id
with the server's OperationOutcome diagnostics and all the others are loaded.  Lines that
are not JSON, or lack ``resourceType``/``id``, are reported by file and line.  A server
that keeps failing (5xx/timeouts after retries) fails that chunk, reported likewise; an
authentication failure stops the load.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from connectors.errors import FhirAuthError, FhirError, FhirInvalidResource
from connectors.fhir._client import FhirRestClient

log = logging.getLogger("connectors.fhir.loader")

#: Resource types in the order they are loaded (referenced before referencing).
DEPENDENCY_ORDER = (
    "Patient",
    "Practitioner",
    "Organization",
    "Location",
    "PractitionerRole",
    "Medication",
    "Device",
    "Group",
    "Encounter",
    "EpisodeOfCare",
    "Condition",
    "Procedure",
    "Observation",
    "MedicationRequest",
    "MedicationStatement",
    "MedicationAdministration",
    "AllergyIntolerance",
    "Immunization",
    "DiagnosticReport",
    "ImagingStudy",
    "Binary",
    "DocumentReference",
    "RiskAssessment",
)


@dataclass
class Rejection:
    """A resource (or line) that was not loaded, and why."""

    where: str  # "Observation/obs-1" or "Observation.ndjson line 7"
    reason: str


@dataclass
class LoadReport:
    """What a load did: counts by type and the rejections."""

    loaded: dict[str, int] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    transactions: int = 0
    batches: int = 0

    @property
    def total_loaded(self) -> int:
        return sum(self.loaded.values())

    def rejected_by_type(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rejected:
            t = r.where.split("/", 1)[0].split(".", 1)[0].split(" ", 1)[0]
            out[t] = out.get(t, 0) + 1
        return out


def ndjson_files(folder: str | Path) -> list[Path]:
    """NDJSON files of ``folder`` (or ``folder/fhir``) in dependency order.

    Raises:
        FhirError: no such folder, or no ``*.ndjson``/``*.ndjson.gz`` in it.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FhirError(f"{root}: not a folder")
    files = _listing(root)
    if not files and (root / "fhir").is_dir():
        files = _listing(root / "fhir")
    if not files:
        raise FhirError(f"{root}: no *.ndjson files (nor in {root / 'fhir'})")
    rank = {t: i for i, t in enumerate(DEPENDENCY_ORDER)}
    return sorted(files, key=lambda p: (rank.get(_type_of(p), len(rank)), _type_of(p), p.name))


def _listing(d: Path) -> list[Path]:
    return [p for p in d.iterdir() if p.is_file() and p.name.endswith((".ndjson", ".ndjson.gz"))]


def _type_of(path: Path) -> str:
    return path.name.split(".", 1)[0].split("_", 1)[0]


def _open(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def count_lines(files: list[Path]) -> int:
    n = 0
    for p in files:
        with _open(p) as f:
            n += sum(1 for line in f if line.strip())
    return n


def _resources(files: list[Path], report: LoadReport) -> Iterator[dict[str, Any]]:
    for path in files:
        report.files.append(path)
        with _open(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    res = json.loads(line)
                except json.JSONDecodeError:
                    report.rejected.append(Rejection(f"{path.name} line {n}", "not JSON"))
                    yield {}
                    continue
                if not isinstance(res, dict) or not res.get("resourceType") or not res.get("id"):
                    report.rejected.append(
                        Rejection(f"{path.name} line {n}", "resourceType or id missing")
                    )
                    yield {}
                    continue
                yield res


def load_folder(
    client: FhirRestClient,
    folder: str | Path,
    *,
    batch_size: int = 50,
    on_progress: Callable[[int], None] | None = None,
) -> LoadReport:
    """Load every resource of ``folder`` (see the module docstring).

    ``on_progress(n)`` is called after every ``n`` lines handled (for a progress bar).

    Raises:
        FhirAuthError: the server refused our credentials (the load stops).
        FhirError: the folder has no NDJSON files.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    files = ndjson_files(folder)
    report = LoadReport()
    chunk: list[dict[str, Any]] = []
    for res in _resources(files, report):
        if not res:
            if on_progress:
                on_progress(1)
            continue
        chunk.append(res)
        if len(chunk) >= batch_size:
            _send(client, chunk, report)
            if on_progress:
                on_progress(len(chunk))
            chunk = []
    if chunk:
        _send(client, chunk, report)
        if on_progress:
            on_progress(len(chunk))
    return report


def _entry(res: dict[str, Any]) -> dict[str, Any]:
    url = f"{res['resourceType']}/{res['id']}"
    return {"fullUrl": url, "resource": res, "request": {"method": "PUT", "url": url}}


def _send(client: FhirRestClient, chunk: list[dict[str, Any]], report: LoadReport) -> None:
    entries = [_entry(r) for r in chunk]
    try:
        results = client.transaction(entries)
        report.transactions += 1
    except FhirInvalidResource as exc:
        log.info("transaction of %d rejected (%s); resending as a batch", len(chunk), exc)
        try:
            results = client.transaction(entries, kind="batch")
            report.batches += 1
        except FhirAuthError:
            raise
        except FhirError as exc2:
            _fail_chunk(chunk, str(exc2), report)
            return
    except FhirAuthError:
        raise
    except FhirError as exc:
        _fail_chunk(chunk, str(exc), report)
        return
    for res, result in zip(chunk, results, strict=True):
        label = f"{res['resourceType']}/{res['id']}"
        if result.ok:
            report.loaded[res["resourceType"]] = report.loaded.get(res["resourceType"], 0) + 1
        else:
            reason = result.diagnostics or f"HTTP {result.status}"
            report.rejected.append(Rejection(label, reason))


def _fail_chunk(chunk: list[dict[str, Any]], reason: str, report: LoadReport) -> None:
    log.error("%d resources not loaded: %s", len(chunk), reason)
    for res in chunk:
        report.rejected.append(Rejection(f"{res['resourceType']}/{res['id']}", reason))
