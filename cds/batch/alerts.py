"""Alert rules applied after each prediction, and the one-open-alert-per-reason rule.

Rules (``[alerts]`` in config), on the configured outcome:

- ``high_tier``: the tier is high (when ``on_high_tier``);
- ``threshold_crossing``: the probability was below ``threshold`` last run and is at or
  above it now;
- ``rise``: the probability rose by at least ``rise`` since the previous run;
- ``fibrosis``: the LGE fibrosis burden exceeds ``fibrosis_burden``.

At most one open (not resolved) alert per patient per reason: :attr:`Alert.open_key` is
unique.  A new finding for a reason that already has an open alert updates that alert's
numbers and adds an audit event instead of opening a second one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from cds.config import AlertSettings
from cds.db.models import Alert, AlertEvent, Prediction


class Scores(Protocol):
    """What the rules read of a stored score (a Prediction, or a shadow version's row)."""

    @property
    def probabilities(self) -> Mapping[str, float]: ...
    @property
    def tiers(self) -> Mapping[str, str]: ...
    @property
    def fibrosis_burden(self) -> float | None: ...


@dataclass(frozen=True)
class Finding:
    reason: str
    message: str


def evaluate_rules(
    rules: AlertSettings,
    current: Scores,
    previous: Scores | None,
) -> list[Finding]:
    """What the rules say about ``current`` given the patient's ``previous`` prediction."""
    outcome = rules.outcome
    p = float(current.probabilities.get(outcome, 0.0))
    tier = current.tiers.get(outcome, "low")
    prev_p = None if previous is None else previous.probabilities.get(outcome)
    found: list[Finding] = []
    if rules.on_high_tier and tier == "high":
        found.append(Finding("high_tier", f"High 1-year {outcome} risk: {p:.0%}"))
    if prev_p is not None and float(prev_p) < rules.threshold <= p:
        found.append(
            Finding(
                "threshold_crossing",
                f"1-year {outcome} risk crossed {rules.threshold:.0%}: "
                f"{float(prev_p):.0%} -> {p:.0%}",
            )
        )
    if prev_p is not None and p - float(prev_p) >= rules.rise:
        found.append(
            Finding("rise", f"1-year {outcome} risk rose {p - float(prev_p):+.0%} to {p:.0%}")
        )
    burden = current.fibrosis_burden
    if burden is not None and burden > rules.fibrosis_burden:
        found.append(Finding("fibrosis", f"LGE fibrosis burden {burden:.0%}"))
    return found


def apply_findings(
    session: Session,
    prediction: Prediction,
    findings: list[Finding],
    *,
    outcome: str,
    run_id: int | None,
) -> int:
    """Open (or refresh) alerts for ``findings``; returns the number of new alerts."""
    new = 0
    now = dt.datetime.now(dt.UTC)
    for f in findings:
        key = f"{prediction.patient_id}:{f.reason}"
        alert = session.scalar(select(Alert).where(Alert.open_key == key))
        p = prediction.probabilities.get(outcome)
        tier = prediction.tiers.get(outcome, "low")
        if alert is None:
            alert = Alert(
                patient_id=prediction.patient_id,
                prediction_id=prediction.id,
                run_id=run_id,
                reason=f.reason,
                outcome=outcome,
                message=f.message,
                tier=tier,
                probability=p,
                status="new",
                open_key=key,
                created_at=now,
                updated_at=now,
            )
            session.add(alert)
            session.flush()
            session.add(
                AlertEvent(
                    alert_id=alert.id,
                    actor="system",
                    action="created",
                    detail={"message": f.message, "run_id": run_id},
                    at=now,
                )
            )
            new += 1
        elif alert.prediction_id != prediction.id:
            alert.prediction_id = prediction.id
            alert.message = f.message
            alert.tier = tier
            alert.probability = p
            alert.updated_at = now
            session.add(
                AlertEvent(
                    alert_id=alert.id,
                    actor="system",
                    action="refreshed",
                    detail={"message": f.message, "run_id": run_id},
                    at=now,
                )
            )
    return new
