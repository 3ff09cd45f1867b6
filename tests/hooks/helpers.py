"""Test data and test doubles for the CDS Hooks tests.

``RuleScorer`` is a test double of :class:`cds.hooks.scoring.OnDemandScorer`: it derives
probabilities from the LVEF and NT-proBNP Observations it is given by a fixed rule, so a
test can check that the service passed it the prefetched data (typed R4B objects) and
the cached image features.  It stands in for the trained model, which the real-path
tests use once ``model.predictor`` is available.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cds.db.models import ImageFeatureCache, ModelVersion, Patient, Prediction
from cds.hooks.scoring import CachedImage, ModelInfo, OnDemandScore
from cds.scoring import StoredInput, StoredInputs
from connectors.fhir.base import PatientRecord
from model.types import OUTCOMES, PatientPrediction

BASE_URL = "https://cds.test.example"
PUBLIC_URL = "https://inbox.test.example"
ISS = "https://ehr.test.example"
ISS_JKU = "https://ehr2.test.example"
PV = "mprtm-hf-risk-patient-view"
DC = "mprtm-hf-risk-discharge"

LVEF = "10230-1"
NTPROBNP = "33762-6"


def tier_of(p: float) -> str:
    return "high" if p >= 0.3 else ("moderate" if p >= 0.1 else "low")


class RuleScorer:
    """Deterministic test double of the on-demand scorer (see module docstring).

    Args:
        delay_s: seconds each call sleeps (time-budget tests).
        fail_with: an exception instance raised by every call.
    """

    def __init__(self, delay_s: float = 0.0, fail_with: Exception | None = None) -> None:
        self.delay_s = delay_s
        self.fail_with = fail_with
        self.calls: list[tuple[PatientRecord, CachedImage | None]] = []
        self._lock = threading.Lock()

    def info(self) -> ModelInfo:
        return ModelInfo(
            name="M-PRTM",
            version="test-rule",
            checkpoint_sha256="",
            synthetic_training_data=True,
            image_cache_key="test-rule",
        )

    def score(
        self, record: PatientRecord, image: CachedImage | None, as_of: dt.datetime
    ) -> OnDemandScore:
        with self._lock:
            self.calls.append((record, image))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        p = 0.05
        used = []
        for obs in record.observations:
            codes = {c.code for c in (obs.code.coding or [])}
            value = obs.valueQuantity.value if obs.valueQuantity is not None else None
            if value is None:
                continue
            if LVEF in codes and float(value) < 40:
                p += 0.2
                used.append(f"Observation/{obs.id}")
            if NTPROBNP in codes and float(value) > 2000:
                p += 0.15
                used.append(f"Observation/{obs.id}")
        numeric_part = p - 0.05  # the rule is additive, so its parts are its contributions
        burden = image.features.fibrosis_burden if image is not None else None
        if burden is not None:
            p += burden
        probs = {o: min(0.95, p * (1.0 - 0.1 * i)) for i, o in enumerate(OUTCOMES)}
        scale = (1.0 - 0.1 * OUTCOMES.index("death")) if p <= 0.95 else 0.95 / p
        contributions = {
            "death": {
                "reference": 0.05 * scale,
                "numeric": numeric_part * scale,
                "text": 0.0,
                "image": (burden or 0.0) * scale,
            }
        }
        weights = {"numeric": 0.6, "text": 0.1 if record.document_texts else 0.0, "image": 0.0}
        if image is not None:
            weights["image"] = 0.3
        return OnDemandScore(
            prediction=PatientPrediction(
                patient_id=record.patient_id,
                probabilities=probs,
                tiers={o: tier_of(v) for o, v in probs.items()},
                modality_weights=weights,
                fibrosis_burden=burden,
                contributions=contributions,
            ),
            input_fingerprint=uuid.uuid4().hex,
            inputs=_stored_inputs(record, image),
            basis=used,
            lge_series_uid=image.series_instance_uid if image is not None else None,
        )


def _stored_inputs(record: PatientRecord, image: CachedImage | None) -> StoredInputs:
    """The rule scorer's inputs in the stored shape: each valued Observation and the image."""
    items = []
    for obs in record.observations:
        if obs.valueQuantity is None or obs.valueQuantity.value is None:
            continue
        day = obs.effectiveDateTime
        items.append(
            StoredInput(
                name=str(obs.id),
                group="lab",
                value=float(obs.valueQuantity.value),
                unit=str(obs.valueQuantity.unit or ""),
                date=str(day)[:10] if day else None,
                source=f"Observation/{obs.id}",
            )
        )
    if image is not None:
        day = image.study_date.isoformat() if image.study_date else None
        items.append(StoredInput("lge_series", "lge", date=day, source=image.series_instance_uid))
    return StoredInputs(tuple(items))


def add_model_version(session: Session, *, synthetic: bool = True, sha: str = "") -> ModelVersion:
    mv = ModelVersion(
        name="M-PRTM",
        version="0.1.0-test",
        checkpoint_sha256=sha or uuid.uuid4().hex + uuid.uuid4().hex,
        checkpoint_path="checkpoints/test.pt",
        synthetic_training_data=synthetic,
    )
    session.add(mv)
    session.flush()
    return mv


def patient_row(session: Session, fhir_id: str) -> Patient:
    row = session.scalars(select(Patient).where(Patient.fhir_id == fhir_id)).first()
    if row is None:
        row = Patient(fhir_id=fhir_id)
        session.add(row)
        session.flush()
    return row


def add_prediction(
    sessions: sessionmaker[Session],
    fhir_id: str,
    *,
    age_hours: float = 2.0,
    p_death: float = 0.35,
    source: str = "batch",
    synthetic: bool = True,
    fibrosis: float | None = 0.18,
    freshness: dict[str, Any] | None = None,
    checked_hours: float | None = None,
) -> int:
    """Insert a nightly prediction made ``age_hours`` ago (and found unchanged by a nightly
    run ``checked_hours`` ago, when given); returns its id."""
    now = dt.datetime.now(dt.UTC)
    created = now - dt.timedelta(hours=age_hours)
    checked = None if checked_hours is None else now - dt.timedelta(hours=checked_hours)
    probs = {o: max(0.01, p_death - 0.03 * i) for i, o in enumerate(OUTCOMES)}
    with sessions() as s, s.begin():
        mv = add_model_version(s, synthetic=synthetic)
        pred = Prediction(
            patient_id=patient_row(s, fhir_id).id,
            model_version_id=mv.id,
            source=source,
            created_at=created,
            checked_at=checked,
            as_of=created,
            probabilities=probs,
            tiers={o: tier_of(v) for o, v in probs.items()},
            modality_weights={"numeric": 0.5, "text": 0.2, "image": 0.3},
            fibrosis_burden=fibrosis,
            inputs={"freshness": freshness or {"clinical indicators": "2026-01-10"}},
        )
        s.add(pred)
        s.flush()
        return int(pred.id)


def add_cached_image(
    sessions: sessionmaker[Session],
    fhir_id: str,
    *,
    model_version: str = "test-rule",
    study_date: dt.date | None = None,
    burden: float = 0.2,
) -> np.ndarray:
    emb = np.arange(8, dtype=np.float32) / 10
    day = study_date or (dt.date.today() - dt.timedelta(days=30))
    with sessions() as s, s.begin():
        s.add(
            ImageFeatureCache(
                series_fingerprint=uuid.uuid4().hex,
                model_version=model_version,
                patient_fhir_id=fhir_id,
                study_instance_uid="1.2.3.4",
                series_instance_uid=f"1.2.3.4.{uuid.uuid4().int % 10_000}",
                study_date=day.strftime("%Y%m%d"),
                n_slices=10,
                embedding=emb.tobytes(),
                fibrosis_burden=burden,
            )
        )
    return emb


def observation(oid: str, patient: str, loinc: str, value: float, unit: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": "2026-10-01T09:00:00Z",
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org"},
    }


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": r} for r in resources],
    }


def full_prefetch(patient: str) -> dict[str, Any]:
    """A complete, valid prefetch for the patient-view service."""
    return {
        "patient": {"resourceType": "Patient", "id": patient, "gender": "male"},
        "observations": bundle(
            observation("lvef-1", patient, LVEF, 30, "%"),
            observation("bnp-1", patient, NTPROBNP, 3500, "pg/mL"),
        ),
        "conditions": bundle(),
        "medicationRequests": bundle(),
        "medicationStatements": bundle(),
        "documents": bundle(),
        "imagingStudies": bundle(),
    }


def hook_body(
    patient: str,
    hook: str = "patient-view",
    prefetch: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    context: dict[str, Any] = {"userId": "Practitioner/pr-1", "patientId": patient}
    if hook == "encounter-discharge":
        context["encounterId"] = "enc-1"
    body: dict[str, Any] = {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": context,
    }
    if prefetch is not None:
        body["prefetch"] = prefetch
    body.update(extra)
    return body


def service_url(service_id: str = "") -> str:
    return f"{BASE_URL}/cds-services" + (f"/{service_id}" if service_id else "")


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}
