"""Plain domain objects at the model's boundary.

``cds`` builds :class:`ModelInput` from FHIR and DICOM; ``model`` returns
:class:`PatientPrediction`.  Nothing here knows about FHIR or networking.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: The binary 1-year outcomes, in head order.
OUTCOMES: tuple[str, ...] = (
    "death",
    "cv_death",
    "rehospitalization",
    "cardiology_rehospitalization",
    "macce",
)
#: Modalities in fusion order.
MODALITIES: tuple[str, ...] = ("numeric", "text", "image")
TIERS: tuple[str, ...] = ("low", "moderate", "high")


@dataclass
class ModelInput:
    """One patient's inputs, each modality optional.

    Attributes:
        patient_id: an opaque id (FHIR logical id); never a name.
        numeric: feature name -> value in the canonical unit of ``cds/data/features.csv``
            (plus ``age``, ``sex_male``, ``cond_<name>`` and ``med_<name>`` flags).  A key
            that is absent is missing; the model adds missingness indicators itself.
        text: medication list and notes as one string, or None when there is none.
        image: LGE short-axis slices, float32 array (S, H, W), ordered apex-to-base or
            base-to-apex consistently, intensities normalised to about [0, 1]; or None.
        image_fingerprint: a stable hash of the series, the key of the embedding cache.
        image_spacing_mm: in-plane pixel spacing of ``image`` in mm, or None when unknown
            (the image quality checks then skip the physical-size ranges).
    """

    patient_id: str
    numeric: dict[str, float] = field(default_factory=dict)
    text: str | None = None
    image: np.ndarray | None = None
    image_fingerprint: str | None = None
    image_spacing_mm: float | None = None


@dataclass
class ImageFeatures:
    """What the image branch produces for one series (cacheable).

    ``quality``, ``usable``, ``quality_reason`` and ``quality_signals`` are the verdict of
    :func:`model.image_quality.assess`: a series that is not ``usable`` is treated as a
    missing image (modality weight 0, no fibrosis burden reported).
    """

    embedding: np.ndarray  # (D,) float32
    fibrosis_burden: float  # enhanced / myocardial area, 0..1
    segmentation: np.ndarray | None = None  # (S, H, W) uint8: 0 bg, 1 myocardium, 2 enhancement
    quality: float = 1.0
    usable: bool = True
    quality_reason: str | None = None
    quality_signals: dict[str, float] = field(default_factory=dict)


@dataclass
class PatientPrediction:
    """The model's answer for one patient."""

    patient_id: str
    probabilities: dict[str, float]  # outcome -> calibrated 1-year probability
    tiers: dict[str, str]  # outcome -> low / moderate / high
    modality_weights: dict[str, float]  # numeric / text / image; a missing modality is 0.0
    #: the measured burden of a usable series; None without an image or when the series
    #: is not usable (``image_features.usable``)
    fibrosis_burden: float | None
    cause_probabilities: dict[str, float] = field(default_factory=dict)
    image_features: ImageFeatures | None = None
    #: outcome -> {"reference": p0, "numeric": d, "text": d, "image": d}: the reference
    #: patient's probability and each modality's Shapley contribution (probability
    #: units; they add up to ``probabilities[outcome]``); see ``model/attribution.py``.
    contributions: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class LabelledExample:
    """One training/evaluation patient: inputs plus known outcomes.

    Attributes:
        input: the patient's model inputs.
        labels: outcome name (see :data:`OUTCOMES`) -> 0/1; an absent outcome is unknown.
        cause: cause class of the first 1-year event (``none`` without event), or None.
        masks: (S, H, W) uint8 labels aligned with ``input.image`` (0 background,
            1 myocardium, 2 enhancement), or None.
        fibrosis_burden: the true enhanced / myocardial area, or None.
        oracle_risk: outcome -> true 1-year probability from a simulator, or empty.
    """

    input: ModelInput
    labels: dict[str, float] = field(default_factory=dict)
    cause: str | None = None
    masks: np.ndarray | None = None
    fibrosis_burden: float | None = None
    oracle_risk: dict[str, float] = field(default_factory=dict)
