"""``mprtm monitor``: drift, realised performance and operations of the active version and
of every shadow version, after a nightly run.

Signals (each with its value, its ``[monitoring]`` threshold and whether it crossed):

- input drift against the training reference the checkpoint carries
  (``metrics.training_reference``, written by ``mprtm train``): population stability index
  per numeric input, binned at the training deciles (older checkpoints without deciles:
  the deciles of a normal with the training mean and SD); change of each input's missing
  share; share of patients with an LGE series against the training image availability;
  LGE series per night (reported);
- output drift against the median of the version's earlier runs: mean predicted risk of
  ``[alerts] outcome``, share in the high tier, alerts per night (the active version's
  alerts opened; a shadow's would-be alert findings);
- realised performance once outcomes mature: predictions made ``mature_days`` or more
  before now joined with ``mprtm outcomes`` labels, by month of prediction: AUROC,
  calibration-in-the-large, ECE;
- operations: share of the run's patients that failed; card override rate by reason
  (reported).

PSI = sum over bins of (a - e) * ln(a / e), with e the training share of the bin (bins cut
at the distinct training deciles, shares stored with them) and a the run's share
(Siddiqi, *Credit Risk Scorecards*, 2006: 0.1-0.25 a moderate, above 0.25 a significant
shift), less the PSI that sampling alone gives on average (:func:`sampling_psi`).  Inputs
whose training deciles take fewer than five distinct values (flags, NYHA class) get no
PSI, nor a missing-share figure, since absent flags are not stored.  Input figures come
from what the model saw (``Prediction.inputs``); a shadow version sees the same inputs and
is compared with its own training reference.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from cds.config import MonitoringSettings, Settings
from cds.db.models import (
    AdminAlert,
    BatchRun,
    CardFeedback,
    ModelVersion,
    MonitorResult,
    Patient,
    Prediction,
    ShadowPrediction,
)
from cds.errors import UsageError
from cds.scoring.inputs import StoredInputs

log = logging.getLogger("mprtm.monitor")
#: ``mprtm monitor`` exit status when a threshold was crossed.
EXIT_CROSSED = 4
#: Inputs whose training deciles take fewer distinct values are categorical: no PSI.
MIN_DISTINCT_EDGES = 5
_Z_DECILES = (-1.2816, -0.8416, -0.5244, -0.2533, 0.0, 0.2533, 0.5244, 0.8416, 1.2816)


@dataclass
class Signal:
    """One figure: ``kind`` (input, output, performance, operations), ``name`` (e.g.
    ``psi:nt_probnp``), ``value``, ``threshold`` (None: reported only), ``crossed``."""

    kind: str
    name: str
    value: float | None
    threshold: float | None = None
    crossed: bool = False
    n: int = 0


def psi(values: Sequence[float], edges: Sequence[float], expected: Sequence[float]) -> float:
    """Population stability index of ``values`` over the bins cut at ``edges`` (a value
    ``v`` in bin ``searchsorted(edges, v, side="right")``) against the ``expected`` shares."""
    k = len(edges) + 1
    counts = np.bincount(np.searchsorted(np.asarray(edges), values, side="right"), minlength=k)
    actual = np.clip(counts / max(1, len(values)), 1e-4, None)
    exp = np.clip(np.asarray(expected, float), 1e-4, None)
    return float(np.sum((actual - exp) * np.log(actual / exp)))


def sampling_psi(bins: int, n: int, m: float) -> float:
    """PSI two samples of ``n`` and ``m`` from one population show on average
    (``n m / (n + m) * PSI`` is about chi-square with ``bins - 1`` degrees of freedom):
    subtracted, so that a small night is not drift by chance alone.  ``m`` 0: unknown."""
    return (bins - 1) * (1 / n + (1 / m if m > 0 else 0.0)) if n > 0 else 0.0


def _bins(ref: Mapping[str, Any]) -> tuple[list[float], list[float]] | None:
    """(edges, expected shares) of an input: the checkpoint's training bins, else (older
    checkpoints) the deciles of a normal with the training mean and SD."""
    bins = ref.get("bins")
    if bins:
        return [float(x) for x in bins["edges"]], [float(x) for x in bins["shares"]]
    if ref.get("mean") is None or not ref.get("sd"):
        return None
    edges = [float(ref["mean"]) + z * float(ref["sd"]) for z in _Z_DECILES]
    return edges, [0.1] * 10


def _over(value: float | None, limit: float, n: int, cfg: MonitoringSettings) -> bool:
    return value is not None and n >= cfg.min_patients and value > limit


def input_signals(
    inputs: Sequence[StoredInputs], reference: Mapping[str, Any], cfg: MonitoringSettings
) -> list[Signal]:
    """Input drift of one run's patients against a training reference."""
    n = len(inputs)
    values: dict[str, list[float]] = defaultdict(list)
    with_lge = 0
    for si in inputs:
        for item in si.items:
            if item.value is not None and math.isfinite(item.value):
                values[item.name].append(float(item.value))
        with_lge += any(i.group == "lge" and i.source for i in si.items)
    out: list[Signal] = []
    for name, ref in sorted((reference.get("features") or {}).items()):
        bins = _bins(ref)
        if bins is not None and len(bins[0]) < MIN_DISTINCT_EDGES:
            continue  # a flag or a few-level code (absent flags are not stored): not judged
        vals = values.get(name, [])
        if bins is not None and len(vals) >= cfg.min_patients:
            m = float(reference.get("n") or 0) * (1 - float(ref.get("missing") or 0))
            v = psi(vals, *bins) - sampling_psi(len(bins[1]), len(vals), m)
            out.append(Signal("input", f"psi:{name}", v, cfg.psi_max, v > cfg.psi_max, len(vals)))
        if ref.get("missing") is not None and n:
            change = abs((1 - len(vals) / n) - float(ref["missing"]))
            crossed = _over(change, cfg.missing_change_max, n, cfg)
            out.append(Signal("input", f"missing:{name}", change, cfg.missing_change_max,
                              crossed, n))  # fmt: skip
    image_missing = (reference.get("modalities_missing") or {}).get("image")
    if image_missing is not None and n:
        change = abs((1 - with_lge / n) - float(image_missing))
        crossed = _over(change, cfg.modality_change_max, n, cfg)
        out.append(Signal("input", "modality:image", change, cfg.modality_change_max,
                          crossed, n))  # fmt: skip
    out.append(Signal("input", "lge_series", float(with_lge), n=n))
    return out


def _output_figures(rows: Sequence[tuple[Mapping[str, float], Mapping[str, str]]], outcome: str,
                    alerts: int) -> dict[str, float | None]:  # fmt: skip
    probs = [float(p[outcome]) for p, _ in rows if outcome in p]
    high = [t.get(outcome) == "high" for _, t in rows]
    return {
        "mean_risk": sum(probs) / len(probs) if probs else None,
        "high_tier_share": sum(high) / len(high) if high else None,
        "alerts": float(alerts),
    }


def output_signals(
    now: Mapping[str, float | None],
    earlier: Sequence[Mapping[str, float | None]],
    n: int,
    cfg: MonitoringSettings,
) -> list[Signal]:
    """Output drift of a run against the median of the version's earlier runs."""
    out = []
    limits = {"mean_risk": cfg.mean_risk_change_max,
              "high_tier_share": cfg.high_tier_share_change_max}  # fmt: skip
    for key, value in now.items():
        base = [float(b) for e in earlier if (b := e.get(key)) is not None]
        med = statistics.median(base) if base else None
        if key == "alerts":
            ratio = None
            if med is not None and value is not None:
                ratio = (value + 1) / (med + 1)  # +1: a quiet baseline is not a division by 0
                ratio = max(ratio, 1 / ratio)
            crossed = ratio is not None and ratio > cfg.alerts_ratio_max
            out.append(Signal("output", "alerts_per_night", value, None, False, n))
            out.append(Signal("output", "alerts_ratio", ratio, cfg.alerts_ratio_max, crossed, n))
            continue
        out.append(Signal("output", key, value, None, False, n))
        change = None if med is None or value is None else abs(value - med)
        crossed = _over(change, limits[key], n, cfg)
        out.append(Signal("output", f"{key}_change", change, limits[key], crossed, n))
    return out


def read_labels(path: Path, outcome: str) -> dict[str, int]:
    """Patient id -> 0/1 for ``outcome`` from a ``mprtm outcomes`` labels.csv (censored:
    left out)."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or outcome not in reader.fieldnames:
                raise UsageError(f"labels file {path} has no column {outcome!r}")
            out = {}
            for row in reader:
                cell = (row.get(outcome) or "").strip()
                if cell in ("0", "1"):
                    out[str(row["patient_id"])] = int(cell)
            return out
    except OSError as exc:
        raise UsageError(f"cannot read labels file {path}: {exc}") from None


def realised_signals(
    session: Session,
    version_id: int,
    labels: Mapping[str, int],
    outcome: str,
    now: dt.datetime,
    cfg: MonitoringSettings,
) -> list[Signal]:
    """AUROC, calibration-in-the-large and ECE by month of prediction, for predictions of
    ``version_id`` made ``mature_days`` or more before ``now`` (each patient's latest of
    the month)."""
    from model.metrics import binary_metrics, ece
    from model.validation import calibration_intercept_slope

    cutoff = now - dt.timedelta(days=cfg.mature_days)
    rows = session.execute(
        select(Patient.fhir_id, Prediction.as_of, Prediction.probabilities)
        .join(Patient, Patient.id == Prediction.patient_id)
        .where(Prediction.model_version_id == version_id, Prediction.as_of <= cutoff)
        .order_by(Prediction.as_of, Prediction.id)
    ).all()
    by_month: dict[str, dict[str, float]] = defaultdict(dict)
    for pid, as_of, probs in rows:
        if pid in labels and outcome in probs:
            by_month[as_of.strftime("%Y-%m")][pid] = float(probs[outcome])  # latest wins
    out = []
    for month, preds in sorted(by_month.items()):
        y = np.array([labels[p] for p in preds], float)
        p = np.array(list(preds.values()), float)
        n = len(y)
        if n < cfg.min_patients or y.min() == y.max():
            out.append(Signal("performance", f"realised_auroc:{month}", None, n=n))
            continue
        auc = float(binary_metrics(y, p, n_boot=0)["auroc"])  # type: ignore[arg-type]
        e = ece(y, p)
        citl, _ = calibration_intercept_slope(y, p)
        out.append(Signal("performance", f"realised_auroc:{month}", auc, cfg.realised_auroc_min,
                          auc < cfg.realised_auroc_min, n))  # fmt: skip
        out.append(Signal("performance", f"realised_ece:{month}", e, cfg.realised_ece_max,
                          e > cfg.realised_ece_max, n))  # fmt: skip
        out.append(Signal("performance", f"realised_citl:{month}", citl, n=n))
    return out


def operations_signals(session: Session, run: BatchRun, cfg: MonitoringSettings) -> list[Signal]:
    """Failed share of the run; card override rate by reason over the last 30 days."""
    n = run.n_total or 0
    share = (run.n_failed or 0) / n if n else None
    out = [
        Signal("operations", "failed_share", share, cfg.failed_share_max,
               share is not None and share > cfg.failed_share_max, n),
    ]  # fmt: skip
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    fb = session.execute(
        select(CardFeedback.outcome, CardFeedback.override_reason_code).where(
            CardFeedback.received_at >= since
        )
    ).all()
    if fb:
        reasons = Counter(code or "none" for o, code in fb if o == "overridden")
        for code, k in sorted(reasons.items()):
            out.append(Signal("operations", f"override_rate:{code}", k / len(fb), n=len(fb)))
    return out


def _latest_run(session: Session, run_id: int | None) -> BatchRun:
    if run_id is not None:
        run = session.get(BatchRun, run_id)
        if run is None:
            raise UsageError(f"batch run {run_id} does not exist")
        return run
    run = session.scalar(
        select(BatchRun)
        .where(BatchRun.status.like("completed%"))
        .order_by(BatchRun.started_at.desc(), BatchRun.id.desc())
        .limit(1)
    )
    if run is None:
        raise UsageError("no completed batch run to monitor (run `mprtm batch run` first)")
    return run


def _scores(session: Session, run: BatchRun, mv: ModelVersion) -> tuple[list[Any], int]:
    """(probabilities, tiers) rows of ``mv`` in ``run`` and its alerts (or would-be ones)."""
    if mv.id == run.model_version_id:
        preds = session.execute(
            select(Prediction.probabilities, Prediction.tiers).where(Prediction.run_id == run.id)
        ).all()
        return [tuple(r) for r in preds], int(run.n_alerts or 0)
    rows = session.execute(
        select(ShadowPrediction.probabilities, ShadowPrediction.tiers,
               ShadowPrediction.would_alert).where(
            ShadowPrediction.run_id == run.id, ShadowPrediction.model_version_id == mv.id
        )
    ).all()  # fmt: skip
    return [(p, t) for p, t, _ in rows], sum(len(w or []) for _, _, w in rows)


def check(
    session: Session,
    settings: Settings,
    *,
    run_id: int | None = None,
    labels: Mapping[str, int] | None = None,
    now: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Check the active and every shadow version on a run (default: the latest completed
    one); store a :class:`MonitorResult` per version and raise one admin alert per version
    and run when something crossed.  Returns the per-version reports."""
    cfg = settings.monitoring
    outcome = settings.alerts.outcome
    now = now or dt.datetime.now(dt.UTC)
    run = _latest_run(session, run_id)
    inputs = [
        StoredInputs.from_json(raw)
        for raw in session.scalars(select(Prediction.inputs).where(Prediction.run_id == run.id))
    ]
    versions = list(
        session.scalars(
            select(ModelVersion)
            .where(ModelVersion.state.in_(("active", "shadow")))
            .order_by(ModelVersion.id)
        )
    )
    reports = []
    for mv in versions:
        ref = (mv.metrics or {}).get("training_reference") or {}
        signals = input_signals(inputs, ref, cfg)
        rows, alerts = _scores(session, run, mv)
        current = _output_figures(rows, outcome, alerts)
        earlier_runs = session.scalars(
            select(BatchRun)
            .where(BatchRun.id != run.id, BatchRun.started_at < run.started_at,
                   BatchRun.status.like("completed%"))
            .order_by(BatchRun.started_at.desc())
            .limit(cfg.baseline_runs)
        ).all()  # fmt: skip
        earlier = []
        for r in earlier_runs:
            r_rows, r_alerts = _scores(session, r, mv)
            earlier.append(_output_figures(r_rows, outcome, r_alerts))
        earlier = [e for e in earlier if e["mean_risk"] is not None]
        signals += output_signals(current, earlier, len(rows), cfg)
        if labels:
            signals += realised_signals(session, mv.id, labels, outcome, now, cfg)
        signals += operations_signals(session, run, cfg)
        crossed = [s for s in signals if s.crossed]
        session.add(
            MonitorResult(
                created_at=now,
                run_id=run.id,
                model_version_id=mv.id,
                signals=[asdict(s) for s in signals],
                crossed=bool(crossed),
            )
        )
        if crossed:
            _raise_admin_alert(session, mv, run, crossed)
        reports.append(
            {
                "model_version_id": mv.id,
                "state": mv.state,
                "run_id": run.id,
                "crossed": [s.name for s in crossed],
                "signals": [asdict(s) for s in signals],
            }
        )
    session.flush()
    return reports


def _raise_admin_alert(
    session: Session, mv: ModelVersion, run: BatchRun, crossed: Sequence[Signal]
) -> None:
    names = ", ".join(s.name for s in crossed)
    log.warning("monitoring: model version %s, run %s: crossed %s", mv.id, run.id, names)
    key = f"monitor:{mv.id}:{run.id}"
    if session.scalar(select(AdminAlert.id).where(AdminAlert.open_key == key)) is not None:
        return
    session.add(
        AdminAlert(
            kind="monitoring",
            model_version_id=mv.id,
            run_id=run.id,
            message=f"Model version {mv.id} ({mv.state}), run {run.id}: {names}"[:2000],
            detail={"crossed": [asdict(s) for s in crossed]},
            status="new",
            open_key=key,
            created_at=dt.datetime.now(dt.UTC),
        )
    )
