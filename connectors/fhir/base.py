"""What every FHIR source hands to the application.

A source returns ``fhir.resources.R4B`` model objects, never raw dicts.  A resource that
does not parse is skipped and reported in :attr:`PatientRecord.warnings` by its type and
id; it never stops the pull of the other resources.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Protocol

from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.medication import Medication
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient


@dataclass
class PatientRecord:
    """Everything pulled for one patient (typed R4B resources)."""

    patient: Patient
    observations: list[Observation] = field(default_factory=list)
    conditions: list[Condition] = field(default_factory=list)
    medication_requests: list[MedicationRequest] = field(default_factory=list)
    medication_statements: list[MedicationStatement] = field(default_factory=list)
    #: Medication resources the requests/statements point at, keyed by "Medication/<id>"
    #: (contained ones stay inside their request)
    medications: dict[str, Medication] = field(default_factory=dict)
    documents: list[DocumentReference] = field(default_factory=list)
    #: text of each DocumentReference attachment, keyed by "DocumentReference/<id>"
    document_texts: dict[str, str] = field(default_factory=dict)
    imaging_studies: list[ImagingStudy] = field(default_factory=list)
    encounters: list[Encounter] = field(default_factory=list)
    #: e.g. "Observation/obs-17: skipped, does not parse as R4 (valueQuantity.value)"
    warnings: list[str] = field(default_factory=list)

    @property
    def patient_id(self) -> str:
        return str(self.patient.id)


class FhirSource(Protocol):
    """A place patient data are read from (NDJSON folder or FHIR REST server)."""

    def cohort_patient_ids(self, cohort: str) -> list[str]:
        """Patient logical ids of ``cohort``: "all", "group:<id>" or "search:<query>"."""
        ...

    def patient_record(
        self,
        patient_id: str,
        *,
        loinc_codes: tuple[str, ...] = (),
        since: dt.date | None = None,
    ) -> PatientRecord:
        """Pull one patient.  ``loinc_codes`` limits Observations (empty: all); ``since``
        limits Observations to that date or later.  Raises
        :class:`connectors.errors.ResourceNotFound` for an unknown patient."""
        ...

    def close(self) -> None: ...
