"""FHIR R4 resources the service writes back: RiskAssessment per patient per run, and the
Device that stands for the model version (its ``performer``).

Outcome codes: SNOMED CT where a concept exists (death 419620001 "Death (event)",
readmission 417005 "Hospital re-admission (procedure)"); every outcome also carries a code
in the service's own CodeSystem so the five heads are always distinguishable.
Qualitative risk uses the HL7 ``risk-probability`` CodeSystem (low / moderate / high).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from fhir.resources.R4B.device import Device
from fhir.resources.R4B.riskassessment import RiskAssessment

from cds.explain import HEADLINE_OUTCOME, contribution_sentence

SNOMED = "http://snomed.info/sct"
OUTCOME_SYSTEM = "urn:mprtm:outcome"
MODEL_SYSTEM = "urn:mprtm:model"
RA_IDENTIFIER_SYSTEM = "urn:mprtm:riskassessment"
DEVICE_IDENTIFIER_SYSTEM = "urn:mprtm:model-version"
RISK_PROBABILITY = "http://terminology.hl7.org/CodeSystem/risk-probability"

#: outcome -> (display, SNOMED CT code or None)
OUTCOME_CODES: dict[str, tuple[str, str | None]] = {
    "death": ("All-cause death within 1 year", "419620001"),
    "cv_death": ("Cardiovascular death within 1 year", None),
    "rehospitalization": ("Rehospitalization within 1 year", "417005"),
    "cardiology_rehospitalization": ("Cardiology rehospitalization within 1 year", None),
    "macce": ("Major adverse cardiac and cerebrovascular event within 1 year", None),
}
TIER_DISPLAY = {
    "low": "Low likelihood",
    "moderate": "Moderate likelihood",
    "high": "High likelihood",
}


def ra_identifier_value(model_version: str, patient_id: str, run_date: dt.date) -> str:
    """Deterministic identifier value: a re-run on the same day updates, never duplicates.

    ``:`` separates the parts: it cannot occur in a FHIR id, and unlike ``|`` it needs no
    escaping in a token search (``identifier=system|value``).
    """
    return f"{model_version}:{patient_id}:{run_date.isoformat()}"


def build_device(model_name: str, model_version: str, card_url: str, *, synthetic: bool) -> Device:
    """The Device standing for one model version (created once, referenced by every RA)."""
    note = (
        "Demo model trained on synthetic data; not for clinical use."
        if synthetic
        else "Model trained on site data."
    )
    return Device.model_validate(
        {
            "resourceType": "Device",
            "identifier": [{"system": DEVICE_IDENTIFIER_SYSTEM, "value": model_version}],
            "status": "active",
            "manufacturer": "M-PRTM CDS",
            "deviceName": [{"name": model_name, "type": "model-name"}],
            "type": {"text": "Software: multimodal heart-failure prognosis model"},
            "version": [{"value": model_version}],
            "url": card_url,
            "note": [{"text": note}],
        }
    )


def build_risk_assessment(
    *,
    patient_id: str,
    model_name: str,
    model_version: str,
    device_reference: str,
    occurrence: dt.datetime,
    run_date: dt.date,
    probabilities: Mapping[str, float],
    tiers: Mapping[str, str],
    modality_weights: Mapping[str, float],
    fibrosis_burden: float | None,
    basis: Sequence[str],
    contributions: Mapping[str, Mapping[str, float]] | None = None,
) -> RiskAssessment:
    """One RiskAssessment (R4) with a prediction per outcome; validated by fhir.resources."""
    start = occurrence.astimezone(dt.UTC)
    end = (
        start.replace(year=start.year + 1)
        if not (start.month == 2 and start.day == 29)
        else (start + dt.timedelta(days=365))
    )
    predictions = []
    for outcome, p in probabilities.items():
        display, snomed = OUTCOME_CODES.get(outcome, (outcome, None))
        codings = [{"system": OUTCOME_SYSTEM, "code": outcome, "display": display}]
        if snomed:
            codings.insert(0, {"system": SNOMED, "code": snomed})
        tier = tiers.get(outcome, "low")
        predictions.append(
            {
                "outcome": {"coding": codings, "text": display},
                "probabilityDecimal": round(float(p), 4),
                "qualitativeRisk": {
                    "coding": [
                        {"system": RISK_PROBABILITY, "code": tier, "display": TIER_DISPLAY[tier]}
                    ]
                },
                "whenPeriod": {"start": start.isoformat(), "end": end.isoformat()},
            }
        )
    weights = ", ".join(f"{k} {v:.2f}" for k, v in modality_weights.items())
    burden = "no LGE study" if fibrosis_burden is None else f"{100 * fibrosis_burden:.1f}%"
    note = f"Modality weights (fusion attention): {weights}. LGE fibrosis burden: {burden}."
    why = contribution_sentence(contributions, HEADLINE_OUTCOME)
    if why:
        note += f" Contributions to the 1-year death risk (Shapley, per data source): {why}."
    return RiskAssessment.model_validate(
        {
            "resourceType": "RiskAssessment",
            "identifier": [
                {
                    "system": RA_IDENTIFIER_SYSTEM,
                    "value": ra_identifier_value(model_version, patient_id, run_date),
                }
            ],
            "status": "final",
            "subject": {"reference": f"Patient/{patient_id}"},
            "occurrenceDateTime": start.isoformat(),
            "code": {
                "coding": [
                    {
                        "system": MODEL_SYSTEM,
                        "code": "hf-1y-prognosis",
                        "display": "Heart-failure 1-year prognosis",
                    }
                ],
                "text": "Heart-failure 1-year prognosis (M-PRTM)",
            },
            "method": {
                "coding": [
                    {
                        "system": MODEL_SYSTEM,
                        "code": model_name,
                        "version": model_version,
                        "display": f"{model_name} {model_version}",
                    }
                ]
            },
            "performer": {"reference": device_reference},
            "basis": [{"reference": ref} for ref in basis],
            "prediction": predictions,
            "note": [{"text": note}],
        }
    )
