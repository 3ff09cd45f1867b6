"""Each data source's contribution to a risk, as stored and as people read it.

The model returns, per outcome, a reference probability (the mean risk of typical
training patients, seen through the same kinds of data as the patient) and the Shapley
contribution of each modality, which add up to the patient's probability
(``model/attribution.py``; a source the patient lacks contributes 0).  The batch, the CDS Hooks
cards, the RiskAssessment note and the inbox all show them the same way, from here.
"""

from __future__ import annotations

from collections.abc import Mapping

from cds.labels import modality_label
from model.types import MODALITIES, PatientPrediction

#: The outcome the cards and the RiskAssessment note explain.
HEADLINE_OUTCOME = "death"


def stored_contributions(pred: PatientPrediction) -> dict[str, dict[str, float]]:
    """The prediction's contributions rounded as every stored copy keeps them (4 decimals)."""
    return {
        outcome: {k: round(float(v), 4) for k, v in parts.items()}
        for outcome, parts in (pred.contributions or {}).items()
    }


def contribution_parts(
    contributions: Mapping[str, Mapping[str, float]] | None, outcome: str
) -> dict[str, float] | None:
    """``{"reference": p0, <modality>: d, ...}`` for one outcome, or None when not recorded."""
    parts = (contributions or {}).get(outcome)
    if not parts or "reference" not in parts:
        return None
    return {k: float(v) for k, v in parts.items()}


def signed_points(value: float) -> str:
    """A probability difference as signed percentage points: ``+8.1``, ``−2.0``, ``±0.0``."""
    pts = 100.0 * value
    if abs(pts) < 0.05:
        return "±0.0"
    return f"{pts:+.1f}".replace("-", "−")


def contribution_sentence(
    contributions: Mapping[str, Mapping[str, float]] | None,
    outcome: str = HEADLINE_OUTCOME,
) -> str:
    """One line, e.g. ``typical patients 9.0%; clinical measurements +8.1, medications and
    notes +5.2, LGE cardiac MRI −2.0 percentage points; together 20.3%``; "" when not recorded."""
    parts = contribution_parts(contributions, outcome)
    if parts is None:
        return ""
    total = parts["reference"] + sum(parts.get(m, 0.0) for m in MODALITIES)
    sources = ", ".join(
        f"{modality_label(m, lower=True)} {signed_points(parts.get(m, 0.0))}" for m in MODALITIES
    )
    return (
        f"typical patients {100 * parts['reference']:.1f}%; {sources} percentage points; "
        f"together {100 * total:.1f}%"
    )
