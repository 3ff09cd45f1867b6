"""The CDS services this application offers, and the discovery document that lists them.

Two services share one risk engine:

* ``mprtm-hf-risk-patient-view`` on ``patient-view``: the chart is opened.
* ``mprtm-hf-risk-discharge`` on ``encounter-discharge``: the patient is being discharged,
  when a follow-up plan matters most.

Prefetch templates follow the "prefetch query restrictions" of CDS Hooks 2.0: instance
reads, type-level searches by patient reference, token equality on ``code``/``modality``,
``_sort`` and ``_count``.  The Observation template asks only for the LOINC codes the
mapping table (``cds/data/features.csv``) knows and the panels that carry them as
components (``cds/data/panels.csv``: the US Core blood-pressure panel 85354-9).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from cds.clinical_tables import observation_search_codes

PATIENT_TOKEN = "{{context.patientId}}"
ENCOUNTER_TOKEN = "{{context.encounterId}}"


@dataclass(frozen=True)
class PrefetchKey:
    """One prefetch template and the resource types it may bring.

    Args:
        key: the prefetch key of the discovery document.
        template: the FHIR read or search, with prefetch tokens.
        resource_types: resource types accepted under this key (others become warnings).
        search: True for a search (a Bundle is expected), False for an instance read.
    """

    key: str
    template: str
    resource_types: tuple[str, ...]
    search: bool = True


@dataclass(frozen=True)
class ServiceDefinition:
    """A CDS service as discovery describes it.

    Args:
        id: the ``{id}`` of ``{baseUrl}/cds-services/{id}``.
        hook: the hook it is invoked on.
        title: human-friendly name.
        description: what it does.
        prefetch: its prefetch templates.
        usage_requirements: preconditions for use, in words.
        required_context: context fields the hook makes REQUIRED and the service uses.
    """

    id: str
    hook: str
    title: str
    description: str
    prefetch: tuple[PrefetchKey, ...]
    usage_requirements: str = ""
    required_context: tuple[str, ...] = field(default=("patientId",))

    def discovery_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "hook": self.hook,
            "title": self.title,
            "description": self.description,
            "id": self.id,
            "prefetch": {p.key: p.template for p in self.prefetch},
        }
        if self.usage_requirements:
            entry["usageRequirements"] = self.usage_requirements
        return entry

    def prefetch_key(self, key: str) -> PrefetchKey | None:
        for p in self.prefetch:
            if p.key == key:
                return p
        return None


def _observation_template() -> str:
    codes = ",".join(observation_search_codes())
    return f"Observation?patient={PATIENT_TOKEN}&code={codes}&_sort=-date&_count=500"


def _patient_prefetch() -> tuple[PrefetchKey, ...]:
    pid = PATIENT_TOKEN
    return (
        PrefetchKey("patient", f"Patient/{pid}", ("Patient",), search=False),
        PrefetchKey("observations", _observation_template(), ("Observation",)),
        PrefetchKey("conditions", f"Condition?patient={pid}", ("Condition",)),
        # Medication resources a client adds (e.g. by _include) are accepted too.
        PrefetchKey(
            "medicationRequests",
            f"MedicationRequest?patient={pid}",
            ("MedicationRequest", "Medication"),
        ),
        PrefetchKey(
            "medicationStatements",
            f"MedicationStatement?patient={pid}",
            ("MedicationStatement", "Medication"),
        ),
        PrefetchKey(
            "documents",
            f"DocumentReference?patient={pid}&_sort=-date&_count=20",
            ("DocumentReference",),
        ),
        PrefetchKey("imagingStudies", f"ImagingStudy?patient={pid}&modality=MR", ("ImagingStudy",)),
    )


_USAGE = (
    "Heart-failure follow-up patients. Works from the nightly M-PRTM result when it is "
    "fresh; otherwise scores on demand from the prefetched data or, for prefetch keys "
    "left out, from the FHIR server with fhirAuthorization (user/*.read or patient/*.read "
    "on the resources above). LGE cardiac MRI enters only through images already "
    "processed by the nightly batch: the PACS is never queried during a call."
)

PATIENT_VIEW_ID = "mprtm-hf-risk-patient-view"
DISCHARGE_ID = "mprtm-hf-risk-discharge"


@cache
def service_definitions() -> tuple[ServiceDefinition, ...]:
    """Every service offered, in discovery order."""
    return (
        ServiceDefinition(
            id=PATIENT_VIEW_ID,
            hook="patient-view",
            title="M-PRTM heart-failure 1-year risk",
            description=(
                "1-year risk of death, cardiovascular death, rehospitalization and MACCE "
                "for a heart-failure patient from the multimodal M-PRTM model (clinical "
                "measurements, medications and notes, LGE cardiac MRI), with its trend, "
                "modality weights and suggested follow-up."
            ),
            prefetch=_patient_prefetch(),
            usage_requirements=_USAGE,
        ),
        ServiceDefinition(
            id=DISCHARGE_ID,
            hook="encounter-discharge",
            title="M-PRTM heart-failure risk at discharge",
            description=(
                "At discharge of a heart-failure patient: the M-PRTM 1-year risk with its "
                "trend, and follow-up suggestions (HF clinic within 7 days for a high "
                "risk, cardiac MRI when no LGE study was done in the last 12 months)."
            ),
            prefetch=(
                *_patient_prefetch(),
                PrefetchKey("encounter", f"Encounter/{ENCOUNTER_TOKEN}", ("Encounter",), False),
            ),
            usage_requirements=_USAGE,
            required_context=("patientId", "encounterId"),
        ),
    )


def service_by_id(service_id: str) -> ServiceDefinition | None:
    for s in service_definitions():
        if s.id == service_id:
            return s
    return None


def discovery_document() -> dict[str, Any]:
    return {"services": [s.discovery_entry() for s in service_definitions()]}
