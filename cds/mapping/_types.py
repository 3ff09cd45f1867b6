"""Domain objects of the mapping step: one feature value, one mapped patient."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from connectors.pacs.base import SeriesRef
from model.types import ModelInput


@dataclass(frozen=True)
class FeatureValue:
    """One model input with where it came from.

    Args:
        name: feature name (``creatinine``, ``age``, ``cond_diabetes``, ``med_statin``).
        value: value in the canonical unit of ``cds/data/features.csv``.
        unit: that canonical unit ("" for flags).
        date: the clinical date of the value (effective date, onset, authored), if known.
        source: the FHIR reference it came from, e.g. ``Observation/obs-17``.
        original: the value as recorded (``"1.1 mg/dL"``) when a unit was converted.
    """

    name: str
    value: float
    unit: str
    date: dt.date | None
    source: str
    original: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "unit": self.unit,
            "date": self.date.isoformat() if self.date else None,
            "source": self.source,
            **({"original": self.original} if self.original else {}),
        }


@dataclass
class MappedPatient:
    """One patient's FHIR resources and LGE series turned into a :class:`ModelInput`.

    Args:
        patient_id: FHIR logical id.
        as_of: the date the inputs are current for.
        model_input: what the model gets.
        features: every numeric input that was found, with unit, date and source.
        warnings: values dropped and resources skipped, each naming the resource.
        basis: ``Type/id`` of every resource actually used (the RiskAssessment basis).
        lge_series: the selected LGE series, or None.
        n_slices: slices in ``model_input.image`` (0 without an image).
        slice_order: "position" or "instance_number" ("" without an image).
        sop_instance_uids: the image's slices in order (aligns segmentation masks).
        medications: the medication lines of the text (name and dose).
        notes: ``DocumentReference/<id>`` of the notes in the text, newest first.
        note_dates: each of those notes' clinical date (None when it has none).
        mrn: the Patient's MR-typed identifier value, when it has one.
        image_rejected: why the selected series was not given to the image network
            (its DICOM attributes show it is not LGE, or it could not be read); None
            otherwise.
        unrecognised: ``Type/id: system|code`` of Conditions and medications coded in a
            system the value sets use (SNOMED CT, ICD-10, RxNorm, ATC) with codes that no
            value set holds.
    """

    patient_id: str
    as_of: dt.date
    model_input: ModelInput
    features: dict[str, FeatureValue] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    basis: list[str] = field(default_factory=list)
    lge_series: SeriesRef | None = None
    n_slices: int = 0
    slice_order: str = ""
    sop_instance_uids: tuple[str, ...] = ()
    medications: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    note_dates: dict[str, dt.date | None] = field(default_factory=dict)
    mrn: str | None = None
    image_rejected: str | None = None
    unrecognised: list[str] = field(default_factory=list)

    def as_dict(self, *, include_text: bool = False) -> dict[str, Any]:
        """JSON-ready summary (note text only when asked: it is clinical free text)."""
        s = self.lge_series
        text = self.model_input.text
        out: dict[str, Any] = {
            "patient_id": self.patient_id,
            "as_of": self.as_of.isoformat(),
            "features": {k: v.as_dict() for k, v in sorted(self.features.items())},
            "numeric": dict(sorted(self.model_input.numeric.items())),
            "medications": list(self.medications),
            "notes": list(self.notes),
            "text_chars": len(text) if text else 0,
            "lge_series": None
            if s is None
            else {
                "study_instance_uid": s.study_instance_uid,
                "series_instance_uid": s.series_instance_uid,
                "series_description": s.series_description,
                "protocol_name": s.protocol_name,
                "study_date": s.study_date,
                "n_instances": s.n_instances,
            },
            "n_slices": self.n_slices,
            "slice_order": self.slice_order,
            "image_shape": list(self.model_input.image.shape)
            if self.model_input.image is not None
            else None,
            "image_fingerprint": self.model_input.image_fingerprint,
            "image_spacing_mm": self.model_input.image_spacing_mm,
            "image_rejected": self.image_rejected,
            "basis": list(self.basis),
            "warnings": list(self.warnings),
            "not_recognised": list(self.unrecognised),
        }
        if include_text:
            out["text"] = text
        return out
