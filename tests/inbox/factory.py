"""Rows for the inbox's tests, inserted directly (the batch normally writes them).

Every helper takes a SQLAlchemy session, adds and flushes; the caller commits.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from cds.db.models import (
    Alert,
    AlertEvent,
    BatchItem,
    BatchRun,
    CardFeedback,
    ImageFeatureCache,
    IssuedCard,
    ModelVersion,
    Patient,
    Prediction,
    User,
)
from cds.overlay import render_overlay
from cds.users import hash_password

PASSWORD = "correct horse battery"
NOW = dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC)
OUTCOMES = ("death", "cv_death", "rehospitalization", "cardiology_rehospitalization", "macce")


@functools.cache
def _hash(password: str) -> str:
    return hash_password(password)


def user(session: Session, name: str, role: str = "clinician", password: str = PASSWORD) -> User:
    """A user with ``password`` (hashed once per test session: argon2 is slow on purpose)."""
    u = User(username=name, role=role, password_hash=_hash(password), active=True)
    session.add(u)
    session.flush()
    return u


def patient(
    session: Session, fhir_id: str, cohort: str = "hf-clinic", identifier: str = ""
) -> Patient:
    p = Patient(fhir_id=fhir_id, cohort=cohort, identifier=identifier or f"MRN-{fhir_id}")
    session.add(p)
    session.flush()
    return p


def model_version(session: Session, version: str = "1.0.0", card: str = "") -> ModelVersion:
    mv = ModelVersion(
        name="mprtm",
        version=version,
        checkpoint_sha256=f"{abs(hash(version)):064x}"[:64],
        checkpoint_path=f"checkpoints/mprtm-{version}.pt",
        metrics={"auroc_death": 0.81},
        card_markdown=card,
    )
    session.add(mv)
    session.flush()
    return mv


def batch_run(
    session: Session,
    key: str,
    *,
    day: dt.date,
    n_total: int = 3,
    n_failed: int = 0,
    minutes: float = 4.0,
    model: ModelVersion | None = None,
    errors: dict[str, str] | None = None,
) -> BatchRun:
    start = dt.datetime.combine(day, dt.time(2, 0), tzinfo=dt.UTC)
    run = BatchRun(
        run_key=key,
        run_date=day,
        status="failed" if n_failed == n_total else "completed",
        cohort="all",
        executor="local",
        started_at=start,
        finished_at=start + dt.timedelta(minutes=minutes),
        n_total=n_total,
        n_done=n_total - n_failed,
        n_failed=n_failed,
        n_alerts=1,
        timings={"fetch": 12.5, "inference": 30.25},
        summary={
            "n_total": n_total,
            "n_failed": n_failed,
            "n_skipped_already_done": 0,
            "failures": dict(errors or {}),
            "timings_s": {"fetch": 12.5, "inference": 30.25},
        },
        model_version_id=model.id if model else None,
    )
    session.add(run)
    session.flush()
    for pid, err in (errors or {}).items():
        session.add(
            BatchItem(run_id=run.id, patient_fhir_id=pid, status="failed", error=err, attempts=3)
        )
    session.flush()
    return run


def prediction(
    session: Session,
    pat: Patient,
    *,
    as_of: dt.datetime,
    risk: float,
    run: BatchRun | None = None,
    weights: dict[str, float] | None = None,
    fibrosis: float | None = 0.12,
    series_uid: str | None = None,
) -> Prediction:
    probs = {o: round(min(0.99, risk * (1.0 + 0.25 * i)), 4) for i, o in enumerate(OUTCOMES)}
    tiers = {o: "high" if p >= 0.3 else "moderate" if p >= 0.1 else "low" for o, p in probs.items()}
    # reference 10 %, then numeric 50 %, text 30 %, image 20 % of the rest: adds up to p
    contributions = {
        o: {
            "reference": 0.10,
            "numeric": round(0.5 * (p - 0.10), 4),
            "text": round(0.3 * (p - 0.10), 4),
            "image": round(p - 0.10 - round(0.5 * (p - 0.10), 4) - round(0.3 * (p - 0.10), 4), 4),
        }
        for o, p in probs.items()
    }
    pred = Prediction(
        run_id=run.id if run else None,
        patient_id=pat.id,
        as_of=as_of,
        created_at=as_of,
        probabilities=probs,
        tiers=tiers,
        modality_weights=weights or {"numeric": 0.52, "text": 0.18, "image": 0.30},
        fibrosis_burden=fibrosis,
        contributions=contributions,
        lge_series_uid=series_uid,
        inputs={
            "lvef": {
                "value": 31.0,
                "unit": "%",
                "date": "2026-10-02",
                "source": f"Observation/{pat.fhir_id}-lvef",
            },
            "nt_probnp": {
                "value": 2450.0,
                "unit": "pg/mL",
                "date": "2026-11-01",
                "source": f"Observation/{pat.fhir_id}-bnp",
            },
            "age": 71,
        },
        basis=[f"Observation/{pat.fhir_id}-lvef"],
    )
    session.add(pred)
    session.flush()
    return pred


def overlay(
    session: Session, pat: Patient, series_uid: str, burden: float = 0.18
) -> ImageFeatureCache:
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 32, xx - 32)
    img = np.random.default_rng(1).normal(0.25, 0.05, (64, 64))
    seg = np.zeros((64, 64), dtype=np.uint8)
    seg[(r > 13) & (r < 20)] = 1
    seg[(r > 13) & (r < 20) & (xx > 40)] = 2
    img[seg == 2] = 0.95
    row = ImageFeatureCache(
        series_fingerprint=f"fp-{series_uid}"[:64],
        model_version="1.0.0",
        patient_fhir_id=pat.fhir_id,
        study_instance_uid=f"{series_uid}.0",
        series_instance_uid=series_uid,
        study_date="20261001",
        n_slices=10,
        embedding=np.zeros(8, dtype=np.float32).tobytes(),
        fibrosis_burden=burden,
        overlay_png=render_overlay(img, seg),
    )
    session.add(row)
    session.flush()
    return row


def alert(
    session: Session,
    pat: Patient,
    *,
    reason: str = "high_tier",
    tier: str = "high",
    probability: float = 0.35,
    created: dt.datetime = NOW,
    status: str = "new",
    pred: Prediction | None = None,
    **extra: Any,
) -> Alert:
    a = Alert(
        patient_id=pat.id,
        prediction_id=pred.id if pred else None,
        reason=reason,
        outcome="death",
        message=f"1-year risk of death {probability:.0%}",
        tier=tier,
        probability=probability,
        status=status,
        open_key=None if status == "resolved" else f"{pat.id}:{reason}",
        created_at=created,
        updated_at=created,
        **extra,
    )
    session.add(a)
    session.flush()
    session.add(
        AlertEvent(
            alert_id=a.id,
            actor="system",
            action="created",
            detail={"message": a.message, "run_id": None},
            at=created,
        )
    )
    session.flush()
    return a


def feedback(
    session: Session,
    outcome: str,
    reason: tuple[str, str] | None = None,
    service: str = "mprtm-patient-view",
) -> CardFeedback:
    uid = f"card-{session.query(IssuedCard).count() + 1}"
    session.add(IssuedCard(card_uuid=uid, service_id=service, patient_fhir_id="p1"))
    fb = CardFeedback(
        service_id=service,
        card_uuid=uid,
        outcome=outcome,
        override_reason_code=reason[0] if reason else None,
        override_reason_display=reason[1] if reason else None,
    )
    session.add(fb)
    session.flush()
    return fb


def demo_dataset(session: Session) -> dict[str, Any]:
    """A small inbox: 2 users, 4 patients in 2 cohorts, 3 runs, alerts of every tier."""
    alice = user(session, "alice", "clinician")
    admin = user(session, "root-admin", "admin")
    mv = model_version(
        session,
        card="# M-PRTM 1.0\n\nTrained on **synthetic** data.\n\n"
        "| metric | value |\n|---|---|\n| AUROC | 0.81 |\n",
    )
    days = [NOW.date() - dt.timedelta(days=d) for d in (14, 7, 0)]
    runs = [batch_run(session, f"run-{d.isoformat()}", day=d, model=mv) for d in days[:-1]]
    runs.append(
        batch_run(
            session,
            f"run-{days[-1].isoformat()}",
            day=days[-1],
            model=mv,
            n_total=4,
            n_failed=1,
            errors={"p-bad": "FhirError: Observation/x unreadable (HTTP 500)"},
        )
    )
    pats = {
        "p-high": patient(session, "p-high", "hf-clinic"),
        "p-mod": patient(session, "p-mod", "hf-clinic"),
        "p-low": patient(session, "p-low", "telemonitoring"),
        "p-old": patient(session, "p-old", "telemonitoring"),
    }
    base = {"p-high": 0.22, "p-mod": 0.12, "p-low": 0.05, "p-old": 0.3}
    preds: dict[str, Prediction] = {}
    for pid, pat in pats.items():
        for i, run in enumerate(runs):
            as_of = dt.datetime.combine(run.run_date, dt.time(2, 0), tzinfo=dt.UTC)
            preds[pid] = prediction(
                session,
                pat,
                as_of=as_of,
                risk=base[pid] * (1 + 0.2 * i),
                run=run,
                series_uid=f"1.2.3.{pat.id}",
            )
    overlay(session, pats["p-high"], f"1.2.3.{pats['p-high'].id}")
    alerts = {
        "high": alert(session, pats["p-high"], tier="high", probability=0.32, pred=preds["p-high"]),
        "mod": alert(
            session,
            pats["p-mod"],
            reason="rise",
            tier="moderate",
            probability=0.17,
            created=NOW - dt.timedelta(days=1),
            pred=preds["p-mod"],
        ),
        "low": alert(
            session,
            pats["p-low"],
            reason="fibrosis",
            tier="low",
            probability=0.07,
            created=NOW - dt.timedelta(days=3),
            pred=preds["p-low"],
        ),
        "old": alert(
            session,
            pats["p-old"],
            tier="high",
            probability=0.41,
            status="resolved",
            created=NOW - dt.timedelta(days=10),
            resolved_reason="treatment_adjusted",
        ),
    }
    feedback(session, "accepted")
    feedback(session, "accepted")
    feedback(session, "overridden", ("not-relevant", "Not clinically relevant"))
    feedback(session, "overridden", ("already-managed", "Already managed"))
    session.flush()
    return {
        "users": {"alice": alice, "admin": admin},
        "patients": pats,
        "alerts": alerts,
        "runs": runs,
        "model": mv,
    }


def more_alerts(session: Session, n: int) -> None:
    """``n`` more patients with one open alert each (tiers and reasons vary)."""
    tiers = ("high", "moderate", "low")
    reasons = ("high_tier", "rise", "threshold_crossing", "fibrosis")
    for i in range(n):
        pat = patient(session, f"p-{100 + i}", ("hf-clinic", "telemonitoring")[i % 2])
        risk = (0.36, 0.16, 0.06)[i % 3] + 0.01 * i
        pred = prediction(session, pat, as_of=NOW, risk=risk / 1.1)
        alert(
            session,
            pat,
            reason=reasons[i % 4],
            tier=tiers[i % 3],
            probability=risk,
            created=NOW - dt.timedelta(hours=5 * i + 1),
            pred=pred,
        )
