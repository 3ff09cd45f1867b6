"""Local validation of a model on a site's labelled patients (``mprtm validate``).

Pure numpy on predicted probabilities, 0/1 labels (NaN: censored), subgroup variables and
the numeric inputs; the metrics themselves come from :mod:`model.metrics`.  The report's
JSON layout is documented in ``docs/local-validation.md`` (other tools read it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from model.metrics import binary_metrics, bootstrap_auroc, ece
from model.types import OUTCOMES

#: Cut-offs of the threshold table besides the checkpoint's tier thresholds.
CUTOFFS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
#: Threshold probabilities of the decision curve.
DCA_POINTS = tuple(round(x, 2) for x in np.arange(0.01, 0.51, 0.01))
#: A subgroup's flag rate over the cohort's outside this band is marked.
RATIO_BAND = (0.8, 1.25)
#: A subgroup whose calibration-in-the-large exceeds this (log-odds) is marked.
CITL_LIMIT = 0.3
MIN_SUBGROUP = 20
EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, np.float64), EPS, 1 - EPS)
    return np.log(q / (1 - q))


def calibration_intercept_slope(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Calibration-in-the-large (the intercept of ``logit(P(y)) = a + logit(p)``, slope
    fixed at 1; 0 is perfect, > 0 under-prediction) and the calibration slope (``b`` of
    ``a + b * logit(p)``; 1 is perfect), both by Newton's method on the log likelihood
    (Van Calster et al., J Clin Epidemiol 2016)."""
    y = np.asarray(y, np.float64)
    x = _logit(p)
    a = 0.0
    for _ in range(50):
        q = 1 / (1 + np.exp(-(a + x)))
        g, h = float((y - q).sum()), float((q * (1 - q)).sum())
        if h <= 0:
            break
        step = g / h
        a += step
        if abs(step) < 1e-10:
            break
    w = np.zeros(2)
    design = np.stack([np.ones_like(x), x], axis=1)
    for _ in range(100):
        q = 1 / (1 + np.exp(-(design @ w)))
        grad = design.T @ (y - q)
        hess = (design * (q * (1 - q))[:, None]).T @ design
        try:
            step2 = np.linalg.solve(hess + 1e-9 * np.eye(2), grad)
        except np.linalg.LinAlgError:
            break
        w += step2
        if np.abs(step2).max() < 1e-10:
            break
    return float(a), float(w[1])


def threshold_row(y: np.ndarray, p: np.ndarray, cut: float) -> dict[str, float | None]:
    """Flag rate, alerts per 100 patients per night (all scored nightly), sensitivity,
    specificity, PPV, NPV and number needed to evaluate (1 / PPV) at ``p >= cut``."""
    flag = p >= cut
    tp = int((flag & (y == 1)).sum())
    fp = int((flag & (y == 0)).sum())
    fn = int((~flag & (y == 1)).sum())
    tn = int((~flag & (y == 0)).sum())

    def div(a: int, b: int) -> float | None:
        return a / b if b else None

    ppv = div(tp, tp + fp)
    return {
        "cutoff": float(cut),
        "flag_rate": float(flag.mean()),
        "alerts_per_100": float(100 * flag.mean()),
        "sensitivity": div(tp, tp + fn),
        "specificity": div(tn, tn + fp),
        "ppv": ppv,
        "npv": div(tn, tn + fn),
        "nne": (1 / ppv) if ppv else None,
    }


def net_benefit(y: np.ndarray, p: np.ndarray, points: Sequence[float] = DCA_POINTS) -> dict:
    """Decision curve (Vickers & Elkin, Med Decis Making 2006): net benefit of the model
    and of flagging everyone at each threshold probability."""
    n = len(y)
    prev = float(y.mean())
    model, everyone = [], []
    for pt in points:
        flag = p >= pt
        tp = float((flag & (y == 1)).sum()) / n
        fp = float((flag & (y == 0)).sum()) / n
        odds = pt / (1 - pt)
        model.append(tp - fp * odds)
        everyone.append(prev - (1 - prev) * odds)
    return {"threshold": list(points), "model": model, "treat_all": everyone}


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def overall(y: np.ndarray, p: np.ndarray, n_boot: int, seed: int = 0) -> dict[str, Any]:
    """Discrimination and calibration of one outcome (labelled patients only)."""
    m = binary_metrics(y, p, n_boot=n_boot, seed=seed)
    a, b = calibration_intercept_slope(y, p)
    return {
        **m,
        "calibration_intercept": a,
        "calibration_slope": b,
        "n": int(len(y)),
        "prevalence": float(y.mean()),
        "mean_predicted": float(p.mean()),
    }


def subgroup_rows(
    outcome: str,
    y: np.ndarray,
    p: np.ndarray,
    cut: float,
    groups: Mapping[str, np.ndarray],
    n_boot: int,
) -> list[dict[str, Any]]:
    """One row per (variable, level) with at least :data:`MIN_SUBGROUP` patients."""
    overall_rate = float((p >= cut).mean())
    rows = []
    for var, levels in groups.items():
        for level in sorted({str(v) for v in levels if v is not None and str(v) != ""}):
            m = np.array([str(v) == level for v in levels])
            if m.sum() < MIN_SUBGROUP:
                continue
            yy, pp = y[m], p[m]
            both = 0 < yy.sum() < len(yy)
            auroc = ci = None
            if both:
                auroc = float(binary_metrics(yy, pp, n_boot=0)["auroc"])  # type: ignore[arg-type]
                lo, hi, _, _ = bootstrap_auroc(yy, pp, n_boot) if n_boot else (None, None, 0, 0)
                ci = [lo, hi] if n_boot else None
            a, _ = calibration_intercept_slope(yy, pp)
            rate = float((pp >= cut).mean())
            ratio = rate / overall_rate if overall_rate > 0 else None
            rows.append(
                {
                    "outcome": outcome,
                    "variable": var,
                    "level": level,
                    "n": int(m.sum()),
                    "prevalence": float(yy.mean()),
                    "auroc": auroc,
                    "auroc_ci": ci,
                    "calibration_intercept": a,
                    "ece": ece(yy, pp),
                    "flag_rate": rate,
                    "flag_rate_ratio": ratio,
                    "flagged": ratio is not None and not (RATIO_BAND[0] <= ratio <= RATIO_BAND[1]),
                    "calibration_flagged": abs(a) > CITL_LIMIT,
                }
            )
    return rows


def _bins(vals: np.ndarray) -> dict[str, list[float]] | None:
    """``edges``: the distinct training deciles; ``shares``: the training share in each bin
    (a value ``v`` falls in bin ``searchsorted(edges, v, side="right")``), exact even when a
    detection limit puts many values on one decile.  None below 10 values."""
    if len(vals) < 10:
        return None
    edges = np.unique(np.quantile(vals, np.arange(1, 10) / 10))
    counts = np.bincount(np.searchsorted(edges, vals, side="right"), minlength=len(edges) + 1)
    return {"edges": [float(e) for e in edges], "shares": [float(c) for c in counts / len(vals)]}


def training_reference(
    rows: Sequence[Mapping[str, float]], present: np.ndarray, modalities: Sequence[str]
) -> dict[str, Any]:
    """What a checkpoint keeps of its training data for the shift table: per numeric
    input its mean, SD, missing share and bins (:func:`_bins`, what ``mprtm monitor``
    computes its population stability index over; raw units), per modality its missing
    share."""
    names = sorted({k for r in rows for k in r})
    feats = {}
    for name in names:
        vals = np.array([r[name] for r in rows if name in r and r[name] is not None], float)
        vals = vals[np.isfinite(vals)]
        feats[name] = {
            "mean": float(vals.mean()) if len(vals) else None,
            "sd": float(vals.std(ddof=1)) if len(vals) > 1 else None,
            "missing": 1 - len(vals) / max(1, len(rows)),
            "bins": _bins(vals),
        }
    mods = {m: float(1 - present[:, j].mean()) for j, m in enumerate(modalities)}
    return {"n": len(rows), "features": feats, "modalities_missing": mods}


def shift_rows(
    rows: Sequence[Mapping[str, float]], reference: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Standardised mean difference (site - training, over the pooled SD) and missing
    share per input, sorted by |SMD| (Austin, Stat Med 2009: |SMD| > 0.1 is a notable
    imbalance)."""
    out = []
    for name, ref in sorted(reference.get("features", {}).items()):
        vals = np.array([r[name] for r in rows if name in r and r[name] is not None], float)
        vals = vals[np.isfinite(vals)]
        smd = None
        if len(vals) > 1 and ref.get("sd") is not None and ref.get("mean") is not None:
            pooled = math.sqrt((float(vals.var(ddof=1)) + float(ref["sd"]) ** 2) / 2)
            smd = (float(vals.mean()) - float(ref["mean"])) / pooled if pooled > 0 else None
        out.append(
            {
                "feature": name,
                "smd": smd,
                "mean_site": float(vals.mean()) if len(vals) else None,
                "mean_train": ref.get("mean"),
                "missing_site": 1 - len(vals) / max(1, len(rows)),
                "missing_train": ref.get("missing"),
            }
        )
    out.sort(key=lambda r: -abs(r["smd"]) if r["smd"] is not None else 0.0)
    return out


def validation_report(
    y: np.ndarray,
    p: np.ndarray,
    thresholds: Mapping[str, tuple[float, float]],
    groups: Mapping[str, np.ndarray],
    maggic: np.ndarray | None,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """``overall``, ``thresholds``, ``decision_curve``, ``subgroups`` and ``maggic`` of
    probabilities ``p`` (N, 5) against labels ``y`` (N, 5; NaN censored)."""
    rep: dict[str, Any] = {"overall": {}, "thresholds": [], "decision_curve": {},
                           "subgroups": [], "maggic": {}}  # fmt: skip
    for j, o in enumerate(OUTCOMES):
        ok = ~np.isnan(y[:, j]) & ~np.isnan(p[:, j])
        yy, pp = y[ok, j], p[ok, j]
        if len(yy) < 10 or not 0 < yy.sum() < len(yy):
            continue
        rep["overall"][o] = overall(yy, pp, n_boot)
        moderate, high = thresholds.get(o, (0.2, 0.4))
        for name, cut in (("tier_moderate", moderate), ("tier_high", high)):
            rep["thresholds"].append({"outcome": o, "kind": name, **threshold_row(yy, pp, cut)})
        for cut in CUTOFFS:
            rep["thresholds"].append({"outcome": o, "kind": "cutoff", **threshold_row(yy, pp, cut)})
        rep["decision_curve"][o] = net_benefit(yy, pp)
        sub = {k: np.asarray(v, dtype=object)[ok] for k, v in groups.items()}
        rep["subgroups"] += subgroup_rows(o, yy, pp, high, sub, n_boot)
        if maggic is not None:
            mm = maggic[ok]
            both = ~np.isnan(mm)
            if both.sum() >= 10 and 0 < yy[both].sum() < both.sum():
                lo, hi, dlo, dhi = bootstrap_auroc(yy[both], pp[both], n_boot, ref=mm[both])
                rep["maggic"][o] = {
                    "n": int(both.sum()),
                    "auroc_model": float(binary_metrics(yy[both], pp[both], 0)["auroc"]),  # type: ignore[arg-type]
                    "auroc_maggic": float(binary_metrics(yy[both], mm[both], 0)["auroc"]),  # type: ignore[arg-type]
                    "difference_ci": [dlo, dhi],
                    "ece_maggic": ece(yy[both], mm[both]),
                }
    return _clean(rep)
