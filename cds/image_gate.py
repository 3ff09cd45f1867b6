"""The image quality gate on the application side: one verdict per LGE series, one wording.

The model judges its own segmentation (:mod:`model.image_quality`); the pipeline may
already have refused the series from its DICOM attributes (``MappedPatient.image_rejected``:
a cine, T2 or non-cardiac series is never given to the network).  Either way the series
counts as a missing image, and every place a clinician looks says so in the same words:
``MRI could not be analysed: <reason>`` (:func:`unusable_text`).

:func:`image_status` is the one shape stored on ``Prediction.image_quality`` and read by
the cards, the inbox and ``mprtm patient features``::

    {"usable": false, "quality": 0.12, "reason": "no left-ventricular myocardium found",
     "series_instance_uid": "1.2.3", "signals": {...}}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cds.config import Settings
from cds.db.models import ImageFeatureCache
from cds.errors import ConfigError
from cds.mapping import MappedPatient
from model.image_quality import QualityRules
from model.types import ImageFeatures

UNUSABLE_PREFIX = "MRI could not be analysed"


def quality_rules(settings: Settings) -> QualityRules:
    """The gate's thresholds from ``[model] image_*``.

    Raises:
        ConfigError: a threshold out of range, naming the key.
    """
    m = settings.model
    try:
        return QualityRules(
            min_quality=m.image_min_quality,
            min_ring_fraction=m.image_min_ring_fraction,
            max_entropy=m.image_max_entropy,
            min_flip_agreement=m.image_min_flip_agreement,
            max_outside_enhancement=m.image_max_outside_enhancement,
            max_ood_ratio=m.image_max_ood_ratio,
            wall_mm=(m.image_wall_min_mm, m.image_wall_max_mm),
            lv_diameter_mm=(m.image_lv_diameter_min_mm, m.image_lv_diameter_max_mm),
            flip=m.image_flip_check,
        )
    except ValueError as exc:
        where = settings.source_file or "<defaults>"
        raise ConfigError(f"{where}: [model] image quality thresholds: {exc}") from None


def cached_image_features(row: ImageFeatureCache) -> ImageFeatures:
    """A cache row as the predictor's :class:`ImageFeatures` (verdict included)."""
    return ImageFeatures(
        embedding=np.frombuffer(row.embedding, dtype=np.float32).copy(),
        fibrosis_burden=float(row.fibrosis_burden),
        quality=float(row.quality),
        usable=bool(row.usable),
        quality_reason=row.quality_reason,
        quality_signals=dict(row.quality_signals or {}),
    )


def image_status(mapped: MappedPatient, features: ImageFeatures | None) -> dict[str, Any] | None:
    """The verdict on the patient's LGE series, or None when no series was selected.

    Args:
        mapped: the patient's inputs (the selected series, a DICOM-attribute refusal).
        features: what the image network made of the series (None when it did not run:
            refused from its attributes, or undecodable).
    """
    series = mapped.lge_series
    if series is None:
        return None
    uid = series.series_instance_uid
    if mapped.image_rejected:
        return {"usable": False, "quality": None, "reason": mapped.image_rejected,
                "series_instance_uid": uid, "signals": {}}  # fmt: skip
    if features is None:
        if mapped.model_input.image is None:
            return {"usable": False, "quality": None, "reason": "the series could not be read",
                    "series_instance_uid": uid, "signals": {}}  # fmt: skip
        return None
    return features_status(features, uid)


def features_status(features: ImageFeatures, series_instance_uid: str) -> dict[str, Any]:
    """The stored verdict shape of a series the image network judged."""
    return {
        "usable": bool(features.usable),
        "quality": round(float(features.quality), 4),
        "reason": features.quality_reason,
        "series_instance_uid": series_instance_uid,
        "signals": {k: round(float(v), 4) for k, v in features.quality_signals.items()},
    }


def is_unusable(status: Any) -> bool:
    """True for a stored status whose series was not usable."""
    return isinstance(status, dict) and status.get("usable") is False


def unusable_text(status: Any) -> str | None:
    """``MRI could not be analysed: <reason>`` for an unusable series, else None."""
    if not is_unusable(status):
        return None
    reason = str(status.get("reason") or "reason not recorded")
    return f"{UNUSABLE_PREFIX}: {reason}"
