"""The model card shows validation metrics as tables, not as a JSON dump."""

from __future__ import annotations

from model.checkpoint import _metric_tables
from model.types import OUTCOMES


def test_metrics_are_tables_per_outcome_and_model() -> None:
    per = {o: {"auroc": 0.7 + i / 100, "ece": 0.01 * (i + 1)} for i, o in enumerate(OUTCOMES)}
    val = {
        "fusion": per,
        "numeric_only": {"death": {"auroc": 0.61, "ece": 0.2}},
        "ensemble_members": [per, per],
        "segmentation": {"dice_myocardium": 0.655, "dice_enhancement": 0.384},
    }
    text = "\n".join(_metric_tables(val))
    assert "| outcome | fusion | numeric_only |" in text
    assert "| death | 0.700 | 0.610 |" in text
    assert "| macce | 0.740 | - |" in text  # a model without that outcome: a dash
    assert "| death | 0.010 | 0.200 |" in text  # the ECE table
    assert "myocardium 0.655, enhancement 0.384" in text
    assert "{" not in text and "ensemble_members" not in text
