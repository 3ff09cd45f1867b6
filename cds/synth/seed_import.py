"""Import the seed study's CSV format into the cohort layout (FHIR NDJSON + truth).

One CSV row is one patient: demographics, 0/1 history columns, a free-text medication
field ``medical_indicator``, echo and laboratory values in the units of the seed's
hospital (``nan`` = missing), the fibrosis area and the outcomes.  Columns are found
through ``seed_column`` of ``cds/data/features.csv`` and ``conditions.csv``; values are
multiplied by ``seed_factor`` into the canonical UCUM unit.  The medication text becomes
one MedicationStatement per drug and a DocumentReference; outcomes go to
``truth/labels.csv`` (the fibrosis area is copied as given).

A bad cell (a number that does not parse, a flag that is not 0/1) rejects its row with
an error naming the row and column; the other rows are imported.  Errors are returned
and written to ``import-errors.csv``; messages never echo cell contents.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from cds.clinical_tables import condition_specs, feature_specs
from cds.errors import MprtmError
from cds.synth._ids import GROUP_ID
from cds.synth.fhir import ICD10CM, LOINC, OBS_CAT, UCUM, Resource, _cc, _ref, snomed_coding
from cds.synth.generate import LABEL_COLUMNS, dumps
from cds.synth.medications import CATALOGUE, RXNORM
from cds.synth.visits import ECHO, VITALS

ID_SYSTEM = "urn:mprtm:seed:id"
CMR_SYSTEM = "urn:mprtm:seed:cmr-id"
OUTCOME_COLUMNS = {
    "death": "Death",
    "cv_death": "Cardiovascular Death",
    "rehospitalization": "Rehospitalization",
    "cardiology_rehospitalization": "Cardiology Rehospitalization",
    "macce": "MACCES Event",
}
CAUSE_COLUMNS = {"cv_death_cause": "Cause of Cardiovascular Death", "macce_cause": "MACCES Cause"}
FIBROSIS_COLUMN = "Myocardial Fibrosis Area"
MED_COLUMN = "medical_indicator"
_MISSING = {"", "nan", "NaN", "NA", "null"}
_ID_RE = re.compile(r"[A-Za-z0-9.\-]{1,40}")  # used with fullmatch
_EMPTY_DOSE = {"", "0", "1", "0.0", "1.0"}
#: History columns graded 0..max rather than 0/1 (present when above 0).
GRADED_COLUMNS = {"Edema Status": 3}


class SeedImportError(MprtmError):
    """The seed CSV cannot be imported at all (missing file or required column)."""


@dataclass(frozen=True)
class RowError:
    """One rejected cell.

    Args:
        row: 1-based data row (the header is row 0).
        column: the CSV column.
        message: what is wrong (never the cell's content).
    """

    row: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}, column '{self.column}': {self.message}"


@dataclass
class ImportResult:
    """What :func:`import_seed_csv` wrote."""

    patients: int = 0
    rows: int = 0
    errors: list[RowError] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


class _RowParser:
    def __init__(self, row: dict[str, str], number: int) -> None:
        self.row, self.number = row, number
        self.errors: list[RowError] = []

    def err(self, column: str, message: str) -> None:
        self.errors.append(RowError(self.number, column, message))

    def raw(self, column: str) -> str:
        return (self.row.get(column) or "").strip()

    def number_or_none(self, column: str) -> float | None:
        text = self.raw(column)
        if text in _MISSING:
            return None
        try:
            value = float(text)
        except ValueError:
            self.err(column, "not a number")
            return None
        if not math.isfinite(value):
            self.err(column, "not a finite number")
            return None
        return value

    def flag(self, column: str) -> bool | None:
        value = self.number_or_none(column)
        if value is None:
            return None
        top = GRADED_COLUMNS.get(column, 1)
        if not value.is_integer() or not 0 <= value <= top:
            self.err(column, "expected 0 or 1" if top == 1 else f"expected a grade 0-{top}")
            return None
        return value > 0


def split_medications(text: str) -> list[str]:
    """Drug sentences of a ``medical_indicator`` text (class labels and empty ones dropped)."""
    out = []
    for piece in re.split(r"\.\s+(?=[A-Zβ]|from\b)", text.strip()):
        body = re.sub(r"^.*?usage dosage:\s*", "", piece.strip(), flags=re.S).strip().rstrip(".")
        if body in _EMPTY_DOSE:
            continue
        parts = [p.strip() for p in body.split(", ")] if "Other Medications" in piece else [body]
        out += [p for p in parts if p and p not in _EMPTY_DOSE]
    return out


def _drug_coding(text: str) -> dict[str, str] | None:
    low = text.lower()
    for drugs in CATALOGUE.values():
        for d in drugs:
            if d.name.split()[0] in low:
                return {"system": RXNORM, "code": d.rxcui, "display": d.name}
    return None


def _patient_resources(p: _RowParser, ref: date) -> tuple[list[Resource], list[Any]] | None:
    """All resources of one row and its label row, or None when the row has an error."""
    rid = p.raw("ID")
    if not _ID_RE.fullmatch(rid):
        p.err("ID", "missing or not an identifier (letters, digits, '.', '-')")
    pid = f"seed-{rid}"
    sex = p.number_or_none("Gender")
    if sex is not None and sex not in (0.0, 1.0, 2.0):
        p.err("Gender", "expected 1 (male) or 0/2 (female)")
    age = p.number_or_none("Age")
    if age is not None and not 0 <= age <= 120:
        p.err("Age", "outside 0-120")
    values = []
    for spec in feature_specs():
        if spec.seed_column:
            v = p.number_or_none(spec.seed_column)
            if v is not None:
                values.append((spec, v * spec.seed_factor))
    conds = []
    for cs in condition_specs():
        if cs.seed_column and p.flag(cs.seed_column):
            conds.append(cs)
    outcomes = {k: p.flag(col) for k, col in OUTCOME_COLUMNS.items()}
    fib = p.number_or_none(FIBROSIS_COLUMN)
    if p.errors:
        return None

    enc = f"{pid}-enc-0"
    when = f"{ref.isoformat()}T09:00:00Z"
    patient: Resource = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": ID_SYSTEM, "value": rid}],
    }
    if p.raw("CMR_ID") not in _MISSING:
        patient["identifier"].append({"system": CMR_SYSTEM, "value": p.raw("CMR_ID")})
    patient["active"] = True
    if sex is not None:
        patient["gender"] = "male" if sex == 1.0 else "female"
    if age is not None:
        patient["birthDate"] = str(ref.year - int(age))
    out: list[Resource] = [patient]
    out.append(
        {
            "resourceType": "Encounter",
            "id": enc,
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": _ref("Patient", pid),
            "period": {"start": when, "end": when},
        }
    )
    for spec, v in values:
        cat = (
            "vital-signs"
            if spec.name in VITALS
            else "imaging"
            if spec.name in ECHO
            else "laboratory"
        )
        out.append(
            {
                "resourceType": "Observation",
                "id": f"{pid}-obs-{spec.name.replace('_', '-')}",
                "status": "final",
                "category": [{"coding": [{"system": OBS_CAT, "code": cat}]}],
                "code": _cc(LOINC, spec.loinc, spec.label, spec.label),
                "subject": _ref("Patient", pid),
                "encounter": _ref("Encounter", enc),
                "effectiveDateTime": when,
                "valueQuantity": {
                    "value": int(v)
                    if spec.name == "nyha_class" and v.is_integer()
                    else float(f"{v:.6g}"),
                    "unit": spec.unit,
                    "system": UCUM,
                    "code": spec.unit,
                },
            }
        )
    for cs in conds:
        icd = [c for c in cs.icd10 if "." in c] or list(cs.icd10)
        out.append(
            {
                "resourceType": "Condition",
                "id": f"{pid}-cond-{cs.name.replace('_', '-')}",
                "clinicalStatus": _cc(
                    "http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"
                ),
                "verificationStatus": _cc(
                    "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "confirmed",
                    "Confirmed",
                ),
                "code": {
                    "coding": [
                        *snomed_coding(cs),
                        {"system": ICD10CM, "code": icd[0]},
                    ],
                    "text": cs.label,
                },
                "subject": _ref("Patient", pid),
                "recordedDate": ref.isoformat(),
            }
        )
    med_text = p.raw(MED_COLUMN)
    for j, drug in enumerate(split_medications(med_text)):
        concept: dict[str, Any] = {"text": drug}
        coding = _drug_coding(drug)
        if coding:
            concept["coding"] = [coding]
        out.append(
            {
                "resourceType": "MedicationStatement",
                "id": f"{pid}-med-{j}",
                "status": "active",
                "medicationCodeableConcept": concept,
                "subject": _ref("Patient", pid),
                "context": _ref("Encounter", enc),
                "dateAsserted": when,
                "dosage": [{"text": drug}],
            }
        )
    if med_text and med_text not in _MISSING:
        out.append(
            {
                "resourceType": "DocumentReference",
                "id": f"{pid}-doc-medication",
                "status": "current",
                "type": _cc(LOINC, "10160-0", "History of Medication use Narrative"),
                "subject": _ref("Patient", pid),
                "date": when,
                "content": [
                    {
                        "attachment": {
                            "contentType": "text/plain; charset=utf-8",
                            "data": base64.b64encode(med_text.encode("utf-8")).decode("ascii"),
                            "title": "Medication record",
                        }
                    }
                ],
                "context": {"encounter": [_ref("Encounter", enc)]},
            }
        )

    def cause(col: str) -> str:
        text = p.raw(col)
        return "" if text in _MISSING or text in ("0", "0.0") else text

    label = [
        pid,
        *(int(bool(outcomes[k])) if outcomes[k] is not None else "" for k in ("death", "cv_death")),
        cause(CAUSE_COLUMNS["cv_death_cause"]),
        int(bool(outcomes["rehospitalization"]))
        if outcomes["rehospitalization"] is not None
        else "",
        "",
        *(
            int(bool(outcomes[k])) if outcomes[k] is not None else ""
            for k in ("cardiology_rehospitalization", "macce")
        ),
        cause(CAUSE_COLUMNS["macce_cause"]),
        "" if fib is None else p.raw(FIBROSIS_COLUMN),
    ]
    return out, label


def import_seed_csv(
    path: Path, out: Path, reference_date: date = date(2026, 11, 1)
) -> ImportResult:
    """Import ``path`` into ``out`` (``fhir/``, ``truth/labels.csv``, ``import-errors.csv``)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SeedImportError(f"cannot read {path}: {exc.__class__.__name__}") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    if "ID" not in header:
        raise SeedImportError(f"{path}: no 'ID' column; is this the seed CSV format?")
    known = {s.seed_column for s in feature_specs()} | {c.seed_column for c in condition_specs()}
    if not (known - {""}) & set(header):
        raise SeedImportError(f"{path}: none of the seed study's clinical columns is present")
    result = ImportResult()
    resources: list[Resource] = []
    labels: list[list[Any]] = []
    seen: set[str] = set()
    for number, row in enumerate(reader, start=1):
        result.rows += 1
        parser = _RowParser(row, number)
        if None in row:
            parser.err("(row)", "more cells than header columns")
        rid = parser.raw("ID")
        if rid in seen:
            parser.err("ID", "duplicate ID")
        built = None if parser.errors else _patient_resources(parser, reference_date)
        if built is None:
            result.errors += parser.errors
            continue
        seen.add(rid)
        resources += built[0]
        labels.append(built[1])
        result.patients += 1
    members = [
        {"entity": _ref("Patient", r["id"])} for r in resources if r["resourceType"] == "Patient"
    ]
    if members:
        resources.append(
            {
                "resourceType": "Group",
                "id": GROUP_ID,
                "type": "person",
                "actual": True,
                "member": members,
            }
        )
    (out / "fhir").mkdir(parents=True, exist_ok=True)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[str]] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], []).append(dumps(r))
    for rtype, lines in by_type.items():
        (out / "fhir" / f"{rtype}.ndjson").write_text("".join(lines), encoding="utf-8")
    result.counts = {k: len(v) for k, v in by_type.items()}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LABEL_COLUMNS)
    w.writerows(labels)
    (out / "truth" / "labels.csv").write_text(buf.getvalue(), encoding="utf-8")
    meta = {"generator": "mprtm import-csv", "reference_date": reference_date.isoformat()}
    (out / "truth" / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    err_path = out / "import-errors.csv"
    if result.errors:
        ebuf = io.StringIO()
        ew = csv.writer(ebuf, lineterminator="\n")
        ew.writerow(["row", "column", "message"])
        ew.writerows([[e.row, e.column, e.message] for e in result.errors])
        err_path.write_text(ebuf.getvalue(), encoding="utf-8")
    elif err_path.exists():
        err_path.unlink()
    return result
