"""FHIR R4 resources the service writes back: RiskAssessment per patient per run, and the
Device that stands for the model version (its ``performer``).

Outcome codes: SNOMED CT where a concept exists (death 419620001 "Death (event)",
readmission 417005 "Hospital re-admission (procedure)"); every outcome also carries a code
in the service's own CodeSystem so the five heads are always distinguishable.
``qualitativeRisk`` uses the HL7 ``risk-probability`` CodeSystem by its definitions
(:func:`risk_probability_code`); the product's own tier (from the configured thresholds)
goes in the ``risk-tier`` extension with a code of the service's ``risk-tier`` CodeSystem.
Every system of the service's own is a URL under the canonical base (:mod:`cds.canonical`).

Each resource is built with the ``fhir.resources.R4B`` models (the connectors' type) and then
checked against FHIR R4 (4.0.1) itself with fhirclient's R4 models (:func:`check_r4`):
fhir.resources 8 has no R4 package, and R4B is not R4.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fhir.resources.R4B.device import Device
from fhir.resources.R4B.riskassessment import RiskAssessment
from fhirclient.models import device as r4_device
from fhirclient.models import riskassessment as r4_riskassessment
from fhirclient.models.fhirabstractbase import FHIRValidationError

from cds.canonical import Canonical
from cds.explain import HEADLINE_OUTCOME, contribution_sentence

SNOMED = "http://snomed.info/sct"
RISK_PROBABILITY = "http://terminology.hl7.org/CodeSystem/risk-probability"
#: Upper bounds of HL7 risk-probability codes, read from the CodeSystem's definitions:
#: negligible "exceptionally unlikely" (p < 1%), low "possible but unlikely" (p < 10%),
#: moderate "a reasonable likelihood of occurrence" (p <= 50%), high "more likely to occur
#: than not" (p > 50%).  "certain" ("effectively guaranteed") is never claimed by a model.
NEGLIGIBLE_BELOW = 0.01
LOW_BELOW = 0.10
MODERATE_UP_TO = 0.50

#: outcome -> (display, SNOMED CT code or None)
OUTCOME_CODES: dict[str, tuple[str, str | None]] = {
    "death": ("All-cause death within 1 year", "419620001"),
    "cv_death": ("Cardiovascular death within 1 year", None),
    "rehospitalization": ("Rehospitalization within 1 year", "417005"),
    "cardiology_rehospitalization": ("Cardiology rehospitalization within 1 year", None),
    "macce": ("Major adverse cardiac and cerebrovascular event within 1 year", None),
}
TIER_DISPLAY = {
    "low": "Low risk tier",
    "moderate": "Moderate risk tier",
    "high": "High risk tier",
}


def risk_probability_code(p: float) -> tuple[str, str]:
    """(code, display) of HL7 ``risk-probability`` for probability ``p``."""
    if p < NEGLIGIBLE_BELOW:
        return "negligible", "Negligible likelihood"
    if p < LOW_BELOW:
        return "low", "Low likelihood"
    if p <= MODERATE_UP_TO:
        return "moderate", "Moderate likelihood"
    return "high", "High likelihood"


_R4_MODELS: dict[str, Any] = {
    "Device": r4_device.Device,
    "RiskAssessment": r4_riskassessment.RiskAssessment,
}


def check_r4(resource: Device | RiskAssessment) -> None:
    """Check ``resource`` against the FHIR R4 (4.0.1) model of its type (strict: unknown
    elements, wrong types and missing required elements are errors).

    Raises:
        ValueError: naming the resource type and the offending elements.
    """
    rtype = resource.get_resource_type()
    data = resource.model_dump(mode="json", exclude_none=True)
    try:
        _R4_MODELS[rtype](data, strict=True)
    except FHIRValidationError as exc:
        detail = re.sub(r" on <[^>]+>", "", str(exc))  # fhirclient names object addresses
        raise ValueError(f"{rtype} is not valid FHIR R4: {detail}") from None


def ra_identifier_value(model_version: str, patient_id: str, run_date: dt.date) -> str:
    """Deterministic identifier value: a re-run on the same day updates, never duplicates.

    ``:`` separates the parts: it cannot occur in a FHIR id, and unlike ``|`` it needs no
    escaping in a token search (``identifier=system|value``).
    """
    return f"{model_version}:{patient_id}:{run_date.isoformat()}"


def build_device(
    model_name: str,
    model_version: str,
    card_url: str,
    *,
    synthetic: bool,
    canonical: Canonical | None = None,
) -> Device:
    """The Device standing for one model version (created once, referenced by every RA)."""
    systems = canonical or Canonical()
    note = (
        "Demo model trained on synthetic data; not for clinical use."
        if synthetic
        else "Model trained on site data."
    )
    device = Device.model_validate(
        {
            "resourceType": "Device",
            "identifier": [{"system": systems.device_identifier, "value": model_version}],
            "status": "active",
            "manufacturer": "M-PRTM CDS",
            "deviceName": [{"name": model_name, "type": "model-name"}],
            "type": {"text": "Software: multimodal heart-failure prognosis model"},
            "version": [{"value": model_version}],
            "url": card_url,
            "note": [{"text": note}],
        }
    )
    check_r4(device)
    return device


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
    canonical: Canonical | None = None,
) -> RiskAssessment:
    """One RiskAssessment (R4) with a prediction per outcome; validated by fhir.resources."""
    systems = canonical or Canonical()
    start = occurrence.astimezone(dt.UTC)
    end = (
        start.replace(year=start.year + 1)
        if not (start.month == 2 and start.day == 29)
        else (start + dt.timedelta(days=365))
    )
    predictions = []
    for outcome, p in probabilities.items():
        display, snomed = OUTCOME_CODES.get(outcome, (outcome, None))
        codings = [{"system": systems.outcome, "code": outcome, "display": display}]
        if snomed:
            codings.insert(0, {"system": SNOMED, "code": snomed})
        tier = tiers.get(outcome, "low")
        likelihood, likelihood_display = risk_probability_code(float(p))
        tier_coding = {"system": systems.risk_tier, "code": tier, "display": TIER_DISPLAY[tier]}
        predictions.append(
            {
                "extension": [
                    {
                        "url": systems.risk_tier_extension,
                        "valueCodeableConcept": {"coding": [tier_coding]},
                    }
                ],
                "outcome": {"coding": codings, "text": display},
                "probabilityDecimal": round(float(p), 4),
                "qualitativeRisk": {
                    "coding": [
                        {
                            "system": RISK_PROBABILITY,
                            "code": likelihood,
                            "display": likelihood_display,
                        }
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
    ra = RiskAssessment.model_validate(
        {
            "resourceType": "RiskAssessment",
            "identifier": [
                {
                    "system": systems.ra_identifier,
                    "value": ra_identifier_value(model_version, patient_id, run_date),
                }
            ],
            "status": "final",
            "subject": {"reference": f"Patient/{patient_id}"},
            "occurrenceDateTime": start.isoformat(),
            "code": {
                "coding": [
                    {
                        "system": systems.model,
                        "code": "hf-1y-prognosis",
                        "display": "Heart-failure 1-year prognosis",
                    }
                ],
                "text": "Heart-failure 1-year prognosis (M-PRTM)",
            },
            "method": {
                "coding": [
                    {
                        "system": systems.model,
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
    check_r4(ra)
    return ra
