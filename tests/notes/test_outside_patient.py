"""One outside patient, hand-written in Synthea's style (SNOMED CT descendants, RxNorm SCD
codes, US Core vital signs, notes by reference), through every input path: the NDJSON
folder, the FHIR REST connector against the test FHIR engine, and a CDS Hooks call (the
prefetch as the EHR sends it, and the service fetching from ``fhirServer`` itself).

Codes: SNOMED CT and ICD-10-CM codes as published in the VSAC value sets the value sets
are built from; 302870006 as Synthea codes hypertriglyceridemia; RxNorm 200031
(carvedilol 6.25 MG Oral Tablet, SCD) from VSAC "Beta Blocker Therapy"; LOINC 85354-9 with
8480-6/8462-4 as the US Core Blood Pressure profile requires; 88294-4 (eGFR CKD-EPI).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from cds.clinical_tables import observation_search_codes
from cds.hooks._deadline import Deadline
from cds.hooks.prefetch import gather
from cds.hooks.request import parse_hook_request
from cds.hooks.services import service_by_id
from cds.mapping import MappedPatient, map_record
from connectors.fhir.ndjson import NdjsonFolderSource
from connectors.fhir.rest import from_settings
from tests.notes.pdf_fixture import text_pdf
from tests.servers.fhir_engine import FhirEngine

PID = "outside-1"
AS_OF = dt.date(2026, 6, 1)
SCT = "http://snomed.info/sct"
SUBJECT = {"reference": f"Patient/{PID}"}
NOTE_TEXT = "Patient fühlt sich besser; keine Ödeme."
PDF_TEXT = "Echo report: LVEF 32 percent, dilated LV"
CONDITIONS = {
    "t2dm": ("44054006", "Diabetes mellitus type 2 (disorder)"),
    "htn": ("59621000", "Essential hypertension (disorder)"),
    "stemi": ("401303003", "Acute ST segment elevation myocardial infarction (disorder)"),
    "chf": ("88805009", "Chronic congestive heart failure (disorder)"),
    "tg": ("302870006", "Hypertriglyceridemia (disorder)"),
    "shf": ("417996009", "Systolic heart failure (disorder)"),
    "asthma": ("195967001", "Asthma"),
}
EXPECTED_FLAGS = {
    "cond_diabetes",
    "cond_hypertension",
    "cond_prior_mi",
    "cond_heart_failure",
    "cond_hyperlipidemia",
    "cond_hfref",
    "med_beta_blocker",
}


def _resources(base_url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": PID, "gender": "female", "birthDate": "1950-03-04"}
    ]
    for rid, (code, display) in CONDITIONS.items():
        out.append(
            {
                "resourceType": "Condition",
                "id": f"{PID}-{rid}",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {"coding": [{"system": SCT, "code": code, "display": display}]},
                "subject": SUBJECT,
                "onsetDateTime": "2020-01-10T09:00:00-05:00",
            }
        )
    out.append(
        {
            "resourceType": "MedicationRequest",
            "id": f"{PID}-mr1",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {
                "coding": [
                    {
                        "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                        "code": "200031",
                    }
                ],
                "text": "Coreg 6.25 mg",
            },
            "subject": SUBJECT,
            "authoredOn": "2026-01-05",
        }
    )
    vital = [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs",
                }
            ]
        }
    ]

    def q(value: float, unit: str) -> dict[str, Any]:
        return {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}

    out.append(
        {
            "resourceType": "Observation",
            "id": f"{PID}-bp",
            "status": "final",
            "category": vital,
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "subject": SUBJECT,
            "effectiveDateTime": "2026-05-20T10:00:00Z",
            "component": [
                {
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                    "valueQuantity": q(128, "mm[Hg]"),
                },
                {
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                    "valueQuantity": q(78, "mm[Hg]"),
                },
            ],
        }
    )
    out.append(
        {
            "resourceType": "Observation",
            "id": f"{PID}-egfr",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "88294-4"}]},
            "subject": SUBJECT,
            "effectiveDateTime": "2026-05-20T10:00:00Z",
            "valueQuantity": q(52, "mL/min/{1.73_m2}"),
        }
    )
    out.append(
        {
            "resourceType": "Binary",
            "id": "note-txt",
            "contentType": "text/plain; charset=ISO-8859-1",
            "data": base64.b64encode(NOTE_TEXT.encode("latin-1")).decode(),
        }
    )
    out.append(
        {
            "resourceType": "Binary",
            "id": "note-pdf",
            "contentType": "application/pdf",
            "data": base64.b64encode(text_pdf(PDF_TEXT)).decode(),
        }
    )
    for rid, url, ctype, day in (
        ("doc-txt", "Binary/note-txt", "text/plain; charset=ISO-8859-1", "2026-05-21"),
        ("doc-pdf", f"{base_url}/Binary/note-pdf", "application/pdf", "2026-05-22"),
        ("doc-away", "https://elsewhere.example.org/fhir/Binary/x", "text/plain", "2026-05-23"),
    ):
        out.append(
            {
                "resourceType": "DocumentReference",
                "id": rid,
                "status": "current",
                "subject": SUBJECT,
                "date": f"{day}T08:00:00Z",
                "content": [{"attachment": {"contentType": ctype, "url": url}}],
            }
        )
    return out


def _check(m: MappedPatient) -> None:
    numeric = m.model_input.numeric
    assert {k for k, v in numeric.items() if k.startswith(("cond_", "med_")) and v} == (
        EXPECTED_FLAGS
    )
    assert numeric["sbp"] == 128.0 and numeric["dbp"] == 78.0
    assert m.features["sbp"].source == f"Observation/{PID}-bp"
    assert numeric["egfr"] == 52.0
    assert m.unrecognised == [f"Condition/{PID}-asthma: {SCT}|195967001"]
    text = m.model_input.text or ""
    assert NOTE_TEXT in text and PDF_TEXT in text
    assert set(m.notes) >= {"DocumentReference/doc-txt", "DocumentReference/doc-pdf"}
    away = [w for w in m.warnings if w.startswith("DocumentReference/doc-away")]
    assert len(away) == 1 and "not" in away[0]


@pytest.fixture
def engine(fhir_engine: FhirEngine) -> FhirEngine:
    fhir_engine.reset(data=True)
    for res in _resources(fhir_engine.base_url):
        fhir_engine.put(res)
    return fhir_engine


def test_ndjson_folder(tmp_path: Path) -> None:
    _write_ndjson(tmp_path)
    with NdjsonFolderSource(tmp_path) as src:
        record = src.patient_record(PID, loinc_codes=observation_search_codes())
    m = map_record(record, as_of=AS_OF)
    _check(m)
    assert m.model_input.numeric["sbp"] == 128.0  # the US Core panel's component


def test_rest_connector(engine: FhirEngine) -> None:
    with from_settings(base_url=engine.base_url) as src:
        record = src.patient_record(PID, loinc_codes=observation_search_codes())
    m = map_record(record, as_of=AS_OF)
    _check(m)
    assert m.model_input.numeric["dbp"] == 78.0  # the US Core panel's component


def _hook_body(engine: FhirEngine, prefetch: dict[str, Any]) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"patientId": PID, "userId": "Practitioner/1"},
        "fhirServer": engine.base_url,
        "fhirAuthorization": {
            "access_token": "tok",
            "token_type": "Bearer",
            "scope": "patient/*.read",
            "subject": "mprtm",
        },
        "prefetch": prefetch,
    }


def test_cds_hooks_fetching_from_the_fhir_server(engine: FhirEngine) -> None:
    service = service_by_id("mprtm-hf-risk-patient-view")
    assert service is not None
    req = parse_hook_request(_hook_body(engine, {}), service)
    got = gather(req, service, Deadline(20_000))
    _check(map_record(got.record, as_of=AS_OF))


def test_cds_hooks_prefetch_as_the_ehr_sends_it(engine: FhirEngine) -> None:
    """The EHR fills the templates itself (here: by running them on the engine)."""
    import httpx

    service = service_by_id("mprtm-hf-risk-patient-view")
    assert service is not None
    prefetch = {}
    for pk in service.prefetch:
        url = f"{engine.base_url}/{pk.template.replace('{{context.patientId}}', PID)}"
        resp = httpx.get(url, headers={"Accept": "application/fhir+json"})
        prefetch[pk.key] = resp.json() if resp.status_code == 200 else None
    assert "85354-9" in next(p.template for p in service.prefetch if p.key == "observations")
    req = parse_hook_request(_hook_body(engine, prefetch), service)
    got = gather(req, service, Deadline(20_000))
    assert got.key_status["observations"] == "prefetch"
    _check(map_record(got.record, as_of=AS_OF))


def _write_ndjson(folder: Path) -> None:
    by_type: dict[str, list[str]] = {}
    for res in _resources("http://ehr.example.org/fhir"):
        if res["resourceType"] == "DocumentReference" and res["id"] == "doc-pdf":
            res["content"][0]["attachment"]["url"] = "Binary/note-pdf"
        by_type.setdefault(res["resourceType"], []).append(json.dumps(res))
    for rtype, lines in by_type.items():
        (folder / f"{rtype}.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_patient_features_lists_the_codes_not_recognised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cds.cli import main

    _write_ndjson(tmp_path)
    monkeypatch.delenv("MPRTM_CONFIG", raising=False)
    monkeypatch.setenv("MPRTM_FHIR__NDJSON_DIR", str(tmp_path))
    monkeypatch.setenv("MPRTM_DATABASE__URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    args = ["patient", "features", PID, "--as-of", AS_OF.isoformat(), "--no-images"]
    assert main(args) == 0
    out = capsys.readouterr().out
    section = out.split("Codes not recognised (in no value set):")[1].split("Warnings:")[0]
    assert f"Condition/{PID}-asthma: {SCT}|195967001" in section
    assert main([*args, "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["not_recognised"] == [f"Condition/{PID}-asthma: {SCT}|195967001"]
