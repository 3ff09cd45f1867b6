"""One :class:`PatientRecord` -> :class:`MappedPatient` (without the image).

Demographics: ``age`` in completed years on the as-of date (Patient.birthDate; a partial
date counts as its first day) and ``sex_male`` (1.0 male, 0.0 female, absent otherwise).
The text is the medication list and then the notes::

    Medications: bisoprolol 5 MG Oral Tablet (5 mg once daily); furosemide ...
    Note 2026-10-02: ...

It is None when the patient has neither.  The basis lists, in this order, the Patient,
the Observations of the features, the Conditions of the flags, the medications and the
notes used; the image step appends the ImagingStudy of the LGE series when the record
has it.
"""

from __future__ import annotations

import datetime as dt

from cds.mapping._dates import to_day, years_between
from cds.mapping._types import FeatureValue, MappedPatient
from cds.mapping.conditions import condition_flags
from cds.mapping.medications import medication_flags, medications_in_use
from cds.mapping.notes import recent_notes
from cds.mapping.observations import observation_features
from connectors.fhir.base import PatientRecord
from model.types import ModelInput

MAX_AGE = 120


def _demographics(
    record: PatientRecord, as_of: dt.date, warnings: list[str]
) -> dict[str, FeatureValue]:
    p = record.patient
    ref = f"Patient/{p.id}"
    out: dict[str, FeatureValue] = {}
    born = to_day(p.birthDate)
    if born is not None:
        age = years_between(born, as_of)
        if 0 <= age <= MAX_AGE:
            out["age"] = FeatureValue("age", float(age), "a", None, ref)
        else:
            warnings.append(f"{ref}: age {age} on {as_of} is not plausible; dropped")
    gender = str(p.gender or "")
    if gender in ("male", "female"):
        out["sex_male"] = FeatureValue("sex_male", 1.0 if gender == "male" else 0.0, "", None, ref)
    return out


def build_text(medication_lines: list[str], notes: list[tuple[dt.date | None, str]]) -> str | None:
    """The model's text input from medication lines and (date, text) notes, newest first."""
    parts = []
    if medication_lines:
        parts.append("Medications: " + "; ".join(medication_lines) + ".")
    for day, text in notes:
        parts.append(f"Note {day.isoformat() if day else 'undated'}: {text}")
    return "\n".join(parts) if parts else None


def map_record(
    record: PatientRecord,
    *,
    as_of: dt.date,
    window_days: int = 365,
    max_notes: int = 3,
    notes_window_days: int = 365,
) -> MappedPatient:
    """Map one patient's FHIR resources to model inputs (see the module docstring).

    Args:
        record: the patient's resources, as a FhirSource returns them.
        as_of: inputs are taken as known on this day; later data are ignored.
        window_days: an Observation older than this many days before ``as_of`` is stale.
        max_notes: most recent notes that go into the text.
        notes_window_days: a note older than this many days before ``as_of`` is left out.
    """
    warnings = list(record.warnings)
    features = _demographics(record, as_of, warnings)
    features.update(
        observation_features(
            record.observations, as_of=as_of, window_days=window_days, warnings=warnings
        )
    )
    unrecognised: list[str] = []
    cond_all, cond_found = condition_flags(
        record.conditions, as_of=as_of, unrecognised=unrecognised
    )
    uses = medications_in_use(
        record.medication_requests,
        record.medication_statements,
        record.medications,
        as_of=as_of,
        warnings=warnings,
        unrecognised=unrecognised,
    )
    med_all, med_found = medication_flags(uses)
    notes = recent_notes(
        record.documents,
        record.document_texts,
        as_of=as_of,
        max_notes=max_notes,
        window_days=notes_window_days,
    )
    numeric = {k: v.value for k, v in features.items()}
    numeric.update(cond_all)
    numeric.update(med_all)
    features.update(cond_found)
    features.update(med_found)

    basis = [f"Patient/{record.patient.id}"]
    for ref in [v.source for v in features.values()] + [u.ref for u in uses]:
        if ref not in basis:
            basis.append(ref)
    basis += [n.ref for n in notes if n.ref not in basis]

    text = build_text([u.line for u in uses], [(n.date, n.text) for n in notes])
    return MappedPatient(
        patient_id=str(record.patient.id),
        as_of=as_of,
        model_input=ModelInput(patient_id=str(record.patient.id), numeric=numeric, text=text),
        features=features,
        warnings=warnings,
        basis=basis,
        medications=[u.line for u in uses],
        notes=[n.ref for n in notes],
        note_dates={n.ref: n.date for n in notes},
        unrecognised=unrecognised,
    )
