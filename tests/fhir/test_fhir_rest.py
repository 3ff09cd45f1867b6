"""FHIR REST source against the real engine: complete pulls, filters, paging, cohorts."""

from __future__ import annotations

import datetime as dt

import pytest
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient

from connectors.errors import ResourceNotFound
from connectors.fhir.rest import FhirRestSource, from_settings
from tests.fhir.cohort import HEART_RATE, LVEF, Cohort, build_cohort, transaction_of
from tests.servers.fhir_engine import FhirEngine

pytestmark = pytest.mark.fhir_server

RECORD_ATTRS = {
    "Observation": "observations",
    "Condition": "conditions",
    "MedicationRequest": "medication_requests",
    "MedicationStatement": "medication_statements",
    "Encounter": "encounters",
    "ImagingStudy": "imaging_studies",
    "DocumentReference": "documents",
}


@pytest.fixture(scope="module")
def cohort(fhir_engine: FhirEngine) -> Cohort:
    c = build_cohort(n_patients=3, n_obs=5)
    fhir_engine.load(transaction_of(c.resources))
    return c


def source(engine: FhirEngine, **kw: object) -> FhirRestSource:
    args: dict[str, object] = {"base_url": engine.base_url, "backoff_s": 0.05}
    args.update(kw)
    return from_settings(**args)  # type: ignore[arg-type]


def test_cohort_pulled_back_complete(engine: FhirEngine, cohort: Cohort) -> None:
    with source(engine) as src:
        ids = src.cohort_patient_ids(f"group:{cohort.group_id}")
        assert ids == cohort.patient_ids
        for pid, (got_id, rec) in zip(ids, src.iter_patient_records(ids), strict=True):
            assert got_id == pid
            assert not isinstance(rec, Exception), rec
            assert isinstance(rec.patient, Patient) and rec.patient_id == pid
            for rtype, n in cohort.expected[pid].items():
                items = getattr(rec, RECORD_ATTRS[rtype])
                assert len(items) == n, (pid, rtype)
                assert all(type(x).__name__ == rtype for x in items)
            assert all(isinstance(c, Condition) for c in rec.conditions)
            assert all(isinstance(d, DocumentReference) for d in rec.documents)
            for key in (f"DocumentReference/{pid}-note", f"DocumentReference/{pid}-letter"):
                assert rec.document_texts[key] == cohort.texts[key]
            assert rec.warnings == []
    # the loaded values come back unchanged
    want = {r["id"]: r for r in cohort.by_type("Observation")}
    with source(engine) as src:
        rec = src.patient_record(cohort.patient_ids[1])
    for obs in rec.observations:
        assert isinstance(obs, Observation)
        assert float(obs.valueQuantity.value) == want[obs.id]["valueQuantity"]["value"]


def test_observations_filtered_by_loinc_and_window(engine: FhirEngine, cohort: Cohort) -> None:
    pid = cohort.patient_ids[0]
    with source(engine) as src:
        hr = src.patient_record(pid, loinc_codes=(HEART_RATE,))
        assert {o.id for o in hr.observations} == {f"{pid}-hr{j}" for j in range(5)}
        recent = src.patient_record(pid, loinc_codes=(HEART_RATE, LVEF), since=dt.date(2024, 1, 1))
        assert {o.id for o in recent.observations} == (
            {f"{pid}-hr{j}" for j in range(1, 5)} | {f"{pid}-ef"}
        )


def test_paging_follows_next_links(engine: FhirEngine, cohort: Cohort) -> None:
    pid = cohort.patient_ids[2]
    with source(engine, page_size=2) as src:
        page = src.client.search("Observation", {"subject": f"Patient/{pid}"})
        assert page.pages == 4  # 7 observations, 2 a page
        assert len({o.id for o in page.matches}) == 7
        rec = src.patient_record(pid)
        assert len(rec.observations) == 7
        src.client.page_size = 40
        everyone = src.cohort_patient_ids("all")
        assert set(cohort.patient_ids) <= set(everyone)
        assert len(everyone) == len(set(everyone))


def test_search_cohort_and_count(engine: FhirEngine, cohort: Cohort) -> None:
    pid = cohort.patient_ids[1]
    with source(engine) as src:
        assert src.cohort_patient_ids(f"search:identifier=urn:test:mrn|{pid}") == [pid]
        assert src.client.count("Observation", {"subject": f"Patient/{pid}"}) == 7
        with pytest.raises(ValueError, match="cohort must be"):
            src.cohort_patient_ids("everyone")


def test_capability_statement_read_at_start(engine: FhirEngine) -> None:
    with source(engine) as src:
        cap = src.client.capabilities()
        assert cap.fhirVersion == "4.0.1"
        assert src.client.supports("Observation")
        assert engine.stats()["requests"] >= 1


def test_unknown_patient_and_group(engine: FhirEngine) -> None:
    with source(engine) as src:
        with pytest.raises(ResourceNotFound, match="Patient/no-such-patient"):
            src.patient_record("no-such-patient")
        with pytest.raises(ResourceNotFound, match="Group/no-such-group"):
            src.cohort_patient_ids("group:no-such-group")


def test_malformed_resource_skipped_with_warning(engine: FhirEngine, cohort: Cohort) -> None:
    pid = cohort.patient_ids[0]
    bad_id = f"{pid}-broken"
    # status and code missing: R4 requires both; real EHR exports sometimes lack them
    engine.store_unvalidated(
        {
            "resourceType": "Observation",
            "id": bad_id,
            "subject": {"reference": f"Patient/{pid}"},
            "valueQuantity": {"value": 1},
        }
    )
    try:
        with source(engine) as src:
            rec = src.patient_record(pid)
        assert len(rec.observations) == 7
        assert any(w.startswith(f"Observation/{bad_id}: skipped") for w in rec.warnings)
    finally:
        import httpx

        httpx.delete(f"{engine.base_url}/Observation/{bad_id}")
