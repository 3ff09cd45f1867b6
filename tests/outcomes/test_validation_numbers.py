"""model.validation on small cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from model.validation import (
    calibration_intercept_slope,
    net_benefit,
    shift_rows,
    subgroup_rows,
    threshold_row,
    validation_report,
)


def test_threshold_row_by_hand() -> None:
    y = np.array([1, 1, 0, 0, 0, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.6, 0.7, 0.1, 0.2, 0.3, 0.1, 0.1, 0.4, 0.1])
    r = threshold_row(y, p, 0.5)  # flagged: 0.9 (TP), 0.6 (TP), 0.7 (FP)
    assert r["flag_rate"] == pytest.approx(0.3)
    assert r["alerts_per_100"] == pytest.approx(30)
    assert r["sensitivity"] == pytest.approx(2 / 3)
    assert r["specificity"] == pytest.approx(6 / 7)
    assert r["ppv"] == pytest.approx(2 / 3)
    assert r["npv"] == pytest.approx(6 / 7)
    assert r["nne"] == pytest.approx(1.5)
    nb = net_benefit(y, p, [0.5])
    assert nb["model"][0] == pytest.approx(2 / 10 - 1 / 10 * 1.0)
    assert nb["treat_all"][0] == pytest.approx(0.3 - 0.7)


def test_calibration_intercept_and_slope() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.6, 40000)
    y = (rng.random(p.size) < p).astype(float)
    a, b = calibration_intercept_slope(y, p)
    assert abs(a) < 0.03 and abs(b - 1) < 0.05
    # true risk = sigmoid(logit(p) + 0.7): under-prediction shows as intercept +0.7
    q = 1 / (1 + np.exp(-(np.log(p / (1 - p)) + 0.7)))
    y2 = (rng.random(p.size) < q).astype(float)
    a2, _ = calibration_intercept_slope(y2, p)
    assert a2 == pytest.approx(0.7, abs=0.05)


def test_subgroup_flag_rate_ratio_and_marks() -> None:
    y = np.array([0, 1] * 30 + [0] * 40, float)
    p = np.array([0.1, 0.9] * 30 + [0.1] * 40)
    sex = np.array(["f"] * 60 + ["m"] * 40, dtype=object)
    rows = subgroup_rows("death", y, p, 0.5, {"sex": sex}, n_boot=0)
    f, m = rows
    assert (f["level"], f["n"], f["flag_rate"]) == ("f", 60, pytest.approx(0.5))
    assert f["flag_rate_ratio"] == pytest.approx(0.5 / 0.3) and f["flagged"]
    assert m["flag_rate"] == 0 and m["flag_rate_ratio"] == 0 and m["flagged"]


def test_shift_smd() -> None:
    rows = [{"age": 80.0}, {"age": 82.0}, {}, {"age": 78.0}]
    ref = {"features": {"age": {"mean": 70.0, "sd": 2.0, "missing": 0.0}}}
    (r,) = shift_rows(rows, ref)
    # site mean 80, SD 2 -> pooled SD 2 -> SMD 5; one of four missing
    assert r["smd"] == pytest.approx(5.0) and r["missing_site"] == pytest.approx(0.25)


def test_report_keys() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 0.5, (200, 5))
    y = (rng.random((200, 5)) < p).astype(float)
    y[:10, 0] = np.nan  # censored
    rep = validation_report(
        y, p, {}, {"sex": np.array(["f", "m"] * 100, dtype=object)}, p[:, 0], n_boot=50
    )
    d = rep["overall"]["death"]
    assert d["n"] == 190
    assert set(d) >= {
        "auroc",
        "auroc_ci",
        "auprc",
        "ece",
        "brier",
        "calibration_intercept",
        "calibration_slope",
    }
    assert {r["kind"] for r in rep["thresholds"]} == {"tier_moderate", "tier_high", "cutoff"}
    assert set(rep["subgroups"][0]) >= {
        "variable",
        "level",
        "n",
        "auroc",
        "auroc_ci",
        "calibration_intercept",
        "flag_rate",
        "flag_rate_ratio",
        "flagged",
    }
    assert (
        rep["maggic"]["death"]["difference_ci"][0]
        <= 0
        <= rep["maggic"]["death"]["difference_ci"][1]
    )
