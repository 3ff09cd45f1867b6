"""Shadow against active over the last nightly runs: what the admin comparison page shows.

Pairs each :class:`~cds.db.models.ShadowPrediction` with the active version's
:class:`~cds.db.models.Prediction` of the same run and patient, and reports for the
``[alerts] outcome``: agreement of probabilities (mean absolute difference, Pearson
correlation), tier changes as a matrix (active tier -> shadow tier), alerts the active
version raised against alerts the shadow would have raised, and high-tier flag rates by
subgroup (sex, age under/over 75, from the inputs the model saw).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cds.db.models import Alert, BatchRun, Patient, Prediction, ShadowPrediction
from cds.scoring.inputs import StoredInputs

TIERS = ("low", "moderate", "high")


@dataclass
class Comparison:
    """Args:
    model_version_id: the shadow version.
    outcome: the outcome compared.
    run_ids: the runs included (newest first).
    """

    model_version_id: int
    outcome: str
    run_ids: list[int] = field(default_factory=list)
    n_pairs: int = 0
    mean_abs_diff: float | None = None
    correlation: float | None = None
    tier_matrix: dict[str, dict[str, int]] = field(default_factory=dict)
    active_alerts: int = 0
    shadow_would_alert: int = 0
    shadow_would_alert_by_reason: dict[str, int] = field(default_factory=dict)
    #: subgroup -> (patients, active high-tier rate, shadow high-tier rate)
    subgroups: dict[str, tuple[int, float, float]] = field(default_factory=dict)


def _subgroups(inputs: StoredInputs) -> list[str]:
    values = {i.name: i.value for i in inputs.items}
    out = []
    sex = values.get("sex_male")
    if sex is not None:
        out.append("sex: male" if sex >= 0.5 else "sex: female")
    age = values.get("age")
    if age is not None:
        out.append("age: 75 or over" if age >= 75 else "age: under 75")
    return out


def _pearson(xs: list[float], ys: list[float]) -> float | None:
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def compare(session: Session, shadow_id: int, *, outcome: str, last_runs: int = 7) -> Comparison:
    """The comparison of one shadow version over the last ``last_runs`` runs it was in."""
    cmp = Comparison(model_version_id=shadow_id, outcome=outcome)
    cmp.run_ids = list(
        session.scalars(
            select(ShadowPrediction.run_id)
            .where(ShadowPrediction.model_version_id == shadow_id)
            .group_by(ShadowPrediction.run_id)
            .order_by(ShadowPrediction.run_id.desc())
            .limit(last_runs)
        )
    )
    if not cmp.run_ids:
        return cmp
    rows = session.execute(
        select(ShadowPrediction, Prediction)
        .join(Patient, Patient.fhir_id == ShadowPrediction.patient_fhir_id)
        .join(
            Prediction,
            (Prediction.patient_id == Patient.id) & (Prediction.run_id == ShadowPrediction.run_id),
        )
        .join(BatchRun, BatchRun.id == Prediction.run_id)
        .where(
            ShadowPrediction.model_version_id == shadow_id,
            ShadowPrediction.run_id.in_(cmp.run_ids),
            Prediction.model_version_id == BatchRun.model_version_id,
        )
    ).all()
    cmp.tier_matrix = {a: dict.fromkeys(TIERS, 0) for a in TIERS}
    xs: list[float] = []
    ys: list[float] = []
    flags: dict[str, list[int]] = {}
    for sp, p in rows:
        pa, ps = p.probabilities.get(outcome), sp.probabilities.get(outcome)
        if pa is None or ps is None:
            continue
        xs.append(float(pa))
        ys.append(float(ps))
        ta, ts = p.tiers.get(outcome, "low"), sp.tiers.get(outcome, "low")
        if ta in cmp.tier_matrix and ts in cmp.tier_matrix[ta]:
            cmp.tier_matrix[ta][ts] += 1
        for reason in sp.would_alert or []:
            cmp.shadow_would_alert += 1
            by = cmp.shadow_would_alert_by_reason
            by[reason] = by.get(reason, 0) + 1
        for g in _subgroups(StoredInputs.from_json(p.inputs)):
            f = flags.setdefault(g, [0, 0, 0])
            f[0] += 1
            f[1] += ta == "high"
            f[2] += ts == "high"
    cmp.n_pairs = len(xs)
    if xs:
        cmp.mean_abs_diff = sum(abs(x - y) for x, y in zip(xs, ys, strict=True)) / len(xs)
    cmp.correlation = _pearson(xs, ys)
    cmp.active_alerts = int(
        session.scalar(select(func.count(Alert.id)).where(Alert.run_id.in_(cmp.run_ids))) or 0
    )
    cmp.subgroups = {g: (n, a / n, s / n) for g, (n, a, s) in sorted(flags.items())}
    return cmp
