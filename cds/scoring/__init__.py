"""One scoring core for every caller: see :mod:`cds.scoring.core` and
:mod:`cds.scoring.inputs`."""

from cds.scoring.core import (
    PROBABILITY_DECIMALS,
    CachedImage,
    Scored,
    ScoringCore,
    checkpoint_sha256,
    fill_prediction,
    input_fingerprint,
    latest_cached_image,
    parse_dicom_date,
    round_probabilities,
    tiers_for,
)
from cds.scoring.inputs import StoredInput, StoredInputs
from cds.scoring.unchanged import checked_time, latest_batch_predictions, unchanged_predictions

__all__ = [
    "PROBABILITY_DECIMALS",
    "CachedImage",
    "Scored",
    "ScoringCore",
    "StoredInput",
    "StoredInputs",
    "checked_time",
    "checkpoint_sha256",
    "fill_prediction",
    "input_fingerprint",
    "latest_batch_predictions",
    "latest_cached_image",
    "parse_dicom_date",
    "round_probabilities",
    "tiers_for",
    "unchanged_predictions",
]
