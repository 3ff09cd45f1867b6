"""The MAGGIC integer risk score and its published 1-year mortality.

Source: Pocock SJ, Ariti CA, McMurray JJV, et al. "Predicting survival in heart failure:
a risk score based on 39 372 patients from 30 studies." Eur Heart J 2013;34:1404-1413
(the integer score of its Figure 2 and the score-to-1-year-mortality table behind the
published calculator).

Inputs come from the model's numeric features: ``lvef`` (%), ``age`` (years),
``sbp`` (mmHg), ``bmi`` (kg/m2), ``creatinine`` (umol/L), ``nyha_class`` (1-4),
``sex_male``, ``cond_smoking``, ``cond_diabetes``, ``cond_pulmonary_disease`` (COPD),
``med_beta_blocker``, ``med_acei`` / ``med_arb`` / ``med_arni``.  A missing value scores
0 points (the reference category); "heart failure diagnosed within 18 months" is not
among the features and scores 0.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

#: 1-year mortality for integer scores 0..50 (Pocock et al. 2013).
ONE_YEAR_MORTALITY: tuple[float, ...] = (
    0.015, 0.016, 0.018, 0.020, 0.022, 0.024, 0.027, 0.029, 0.032, 0.036,
    0.039, 0.043, 0.048, 0.052, 0.058, 0.063, 0.070, 0.077, 0.084, 0.093,
    0.102, 0.111, 0.122, 0.134, 0.147, 0.160, 0.175, 0.191, 0.209, 0.227,
    0.248, 0.269, 0.292, 0.316, 0.342, 0.369, 0.398, 0.427, 0.458, 0.490,
    0.523, 0.556, 0.590, 0.625, 0.660, 0.695, 0.730, 0.765, 0.799, 0.833,
    0.866,
)  # fmt: skip


def _band(value: float, cuts: tuple[float, ...], points: tuple[int, ...]) -> int:
    """Points of the band ``value`` falls in; ``cuts`` are the lower edges of bands 2..n."""
    return points[bisect.bisect_right(cuts, value)]


def _ef_group(ef: float) -> int:
    return 0 if ef < 30 else (1 if ef < 40 else 2)


_AGE_CUTS = (55, 60, 65, 70, 75, 80)
_AGE_POINTS = ((0, 1, 2, 4, 6, 8, 10), (0, 2, 4, 6, 8, 10, 13), (0, 3, 5, 7, 9, 12, 15))
_SBP_CUTS = (110, 120, 130, 140, 150)
_SBP_POINTS = ((5, 4, 3, 2, 1, 0), (3, 2, 1, 1, 0, 0), (2, 1, 1, 0, 0, 0))


def maggic_score(f: Mapping[str, float]) -> int:
    """Integer MAGGIC score of one patient's features (see the module docstring)."""

    def has(k: str) -> bool:
        v = f.get(k)
        return v is not None and v == v  # not NaN

    def flag(k: str) -> bool:
        return has(k) and float(f[k]) >= 0.5

    score = 0
    ef = float(f["lvef"]) if has("lvef") else 40.0  # missing: reference group
    score += _band(ef, (20, 25, 30, 35, 40), (7, 6, 5, 3, 2, 0))
    g = _ef_group(ef)
    if has("age"):
        score += _band(float(f["age"]), _AGE_CUTS, _AGE_POINTS[g])
    if has("sbp"):
        score += _band(float(f["sbp"]), _SBP_CUTS, _SBP_POINTS[g])
    if has("bmi"):
        score += _band(float(f["bmi"]), (15, 20, 25, 30), (6, 5, 3, 2, 0))
    if has("creatinine"):
        score += _band(
            float(f["creatinine"]), (90, 110, 130, 150, 170, 210, 250), (0, 1, 2, 3, 4, 5, 6, 8)
        )
    if has("nyha_class"):
        score += {1: 0, 2: 2, 3: 6, 4: 8}.get(int(round(float(f["nyha_class"]))), 0)
    score += 1 if flag("sex_male") else 0
    score += 1 if flag("cond_smoking") else 0
    score += 3 if flag("cond_diabetes") else 0
    score += 2 if flag("cond_pulmonary_disease") else 0
    if not flag("med_beta_blocker"):
        score += 3
    if not (flag("med_acei") or flag("med_arb") or flag("med_arni")):
        score += 1
    return score


def maggic_one_year_mortality(f: Mapping[str, float]) -> float:
    """Published 1-year mortality of the patient's MAGGIC score (scores above 50 cap)."""
    return ONE_YEAR_MORTALITY[min(maggic_score(f), len(ONE_YEAR_MORTALITY) - 1)]
