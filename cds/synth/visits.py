"""Visits and measured values over time (vectorised over patients, visits and features).

Each patient has an index HF hospitalization (admission ``index_days`` before the
reference date) and follow-up visits about 1, 3, 6, 9, 12... months after discharge, up to
the reference date.  Values at admission are worse than the current state (congestion:
higher natriuretic peptides, NYHA class, weight, heart rate; lower sodium) and decay
towards it; each measurement adds noise.  Which values are measured at a visit follows
realistic missingness: a full panel at the index admission, a short panel at follow-ups.

The result is three arrays of shape (patients, visits, features): value (canonical
unit), measured (bool) and an alternate-unit choice, plus the visit days.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cds.clinical_tables import FeatureSpec, feature_specs
from cds.synth.cohort import Cohort

MAX_FOLLOWUPS = 6
FOLLOWUP_DAYS = (30, 90, 180, 270, 365, 480)
#: Features measured at follow-up visits (besides vitals, NYHA and the echo).
FOLLOWUP_LABS = frozenset(
    {"nt_probnp", "bnp", "creatinine", "egfr", "urea", "sodium", "potassium", "hemoglobin"}
)
FOLLOWUP_OCCASIONAL = frozenset({"glucose", "hba1c", "cholesterol", "ldl", "hdl", "triglycerides"})
VITALS = frozenset({"weight", "bmi", "heart_rate", "sbp", "dbp", "nyha_class"})
#: Probability that a feature is never measured for a patient (tests not ordered).
NEVER_MEASURED: dict[str, float] = {
    "tsh": 0.35, "ft3": 0.45, "ft4": 0.4, "apoa1": 0.55, "apob": 0.55, "cholinesterase": 0.5,
    "d_dimer": 0.4, "ckmb": 0.3, "tt": 0.4, "fibrinogen": 0.3, "hba1c": 0.3, "tnt": 0.15,
    "ldh": 0.3, "globulin": 0.2, "ag_ratio": 0.25, "aod": 0.2, "bilirubin_direct": 0.15,
}  # fmt: skip
#: log-scale excess at admission (multiplies the current value by exp(k * w)).
ADMISSION_LOG_EXCESS: dict[str, float] = {
    "nt_probnp": 0.9, "bnp": 0.9, "creatinine": 0.12, "urea": 0.2, "tnt": 0.35, "crp": 0.5,
    "d_dimer": 0.3, "bilirubin_total": 0.15, "bilirubin_direct": 0.15, "heart_rate": 0.13,
    "weight": 0.05, "glucose": 0.1, "alt": 0.2, "ast": 0.2, "wbc": 0.08,
}  # fmt: skip
ADMISSION_ADD_EXCESS: dict[str, float] = {
    "sodium": -2.5, "nyha_class": 1.3, "sbp": 8.0, "dbp": 4.0, "albumin": -1.5,
    "hemoglobin": -3.0, "potassium": -0.1,
}  # fmt: skip
#: Relative measurement noise (SD as a fraction of the value); default 0.04.
REL_NOISE: dict[str, float] = {
    "nt_probnp": 0.18, "bnp": 0.18, "tnt": 0.2, "crp": 0.3, "d_dimer": 0.25, "heart_rate": 0.07,
    "sbp": 0.06, "dbp": 0.07, "weight": 0.012, "ckmb": 0.15, "alt": 0.12, "ast": 0.1,
    "tsh": 0.15, "triglycerides": 0.15, "glucose": 0.1,
}  # fmt: skip
ECHO = frozenset({"lvef", "ivstd", "lvpwtd", "lvdd", "aod", "lad"})
#: Fraction of measured values replaced by a deliberately implausible one.
IMPLAUSIBLE_RATE = 0.002
#: Fraction of patients whose laboratory reports in an alternate (convertible) unit.
ALT_UNIT_PATIENTS = 0.15


@dataclass
class Visits:
    """Per-patient visit schedule and measured values.

    Args:
        days: (n, V) days relative to the reference date (negative), -99999 when unused.
        n_visits: (n,) number of used visits (index + follow-ups).
        value: (n, V, F) value in the canonical unit.
        measured: (n, V, F) whether it was measured.
        alt: (n, F) index into ``spec.conversions`` of the unit the patient's lab uses.
        implausible: (n, V, F) whether the value was replaced by an implausible one.
    """

    days: np.ndarray
    n_visits: np.ndarray
    value: np.ndarray
    measured: np.ndarray
    alt: np.ndarray
    implausible: np.ndarray
    specs: tuple[FeatureSpec, ...]


def decimals(spec: FeatureSpec, value: float, unit: str) -> int:
    """Digits to report in ``unit``: whole numbers for NYHA and LVEF %, else ~3 figures."""
    if spec.name in ("nyha_class", "lvef") and unit == spec.unit:
        return 0
    a = abs(value)
    return 0 if a >= 100 else 1 if a >= 10 else 2 if a >= 1 else 3 if a >= 0.01 else 4


def build_visits(c: Cohort, seed: int) -> Visits:
    """Draw visit days and every measured value of every patient."""
    rng = np.random.default_rng([seed, 0x715175])
    specs = feature_specs()
    names = [s.name for s in specs]
    n, f_n, v_n = c.n, len(specs), MAX_FOLLOWUPS + 1
    col = {name: j for j, name in enumerate(names)}

    admit = -c.index_days.astype(float)
    discharge = admit + c.length_of_stay
    fu = (
        discharge[:, None]
        + np.array(FOLLOWUP_DAYS)[None, :]
        + rng.integers(-10, 11, (n, MAX_FOLLOWUPS))
    )
    used = fu <= -3
    days = np.concatenate([admit[:, None] + 1, np.where(used, fu, -99999)], axis=1)
    n_visits = 1 + used.sum(axis=1)
    since_admit = np.where(days > -99999, days - admit[:, None], 0.0)
    w = np.exp(-since_admit / 45.0)  # (n, V): 1 at admission, -> 0
    w[:, 0] = 1.0

    cur = np.stack([c.values[name] for name in names], axis=1)  # (n, F)
    log_ex = np.array([ADMISSION_LOG_EXCESS.get(s, 0.0) for s in names])
    add_ex = np.array([ADMISSION_ADD_EXCESS.get(s, 0.0) for s in names])
    noise = np.array([REL_NOISE.get(s, 0.04) for s in names])
    eps = rng.normal(0.0, 1.0, (n, v_n, f_n))
    val = cur[:, None, :] * np.exp(log_ex[None, None, :] * w[:, :, None]) + add_ex * w[:, :, None]
    val = val * (1 + noise * eps)
    # Exact relations that must hold at every visit.
    h2 = (c.height_cm / 100) ** 2
    val[:, :, col["bmi"]] = val[:, :, col["weight"]] / h2[:, None]
    cr_ratio = val[:, :, col["creatinine"]] / cur[:, None, col["creatinine"]]
    val[:, :, col["egfr"]] = cur[:, None, col["egfr"]] * cr_ratio**-1.2
    nyha = np.rint(
        val[:, :, col["nyha_class"]] + (rng.random((n, v_n)) < 0.1) * rng.choice([-1, 1], (n, v_n))
    )
    val[:, :, col["nyha_class"]] = np.clip(nyha, 1, 4)
    # Reverse remodelling: LVEF at admission lower than now in HFrEF on therapy.
    ef_gain = np.where(c.hf_type == 0, np.clip(rng.normal(4, 3, n), 0, 12), rng.normal(0, 2, n))
    val[:, :, col["lvef"]] = np.clip(
        cur[:, None, col["lvef"]] - ef_gain[:, None] * w + rng.normal(0, 2.5, (n, v_n)), 8, 80
    )
    last = n_visits - 1
    rows = np.arange(n)
    val[rows, last, col["nyha_class"]] = cur[:, col["nyha_class"]]
    val[rows, last, col["lvef"]] = cur[:, col["lvef"]] + rng.normal(0, 1.5, n)
    # Plausible values stay inside the table's range.
    lo = np.array([s.min for s in specs])
    hi = np.array([s.max for s in specs])
    val = np.clip(val, lo + 1e-2 * (hi - lo), hi - 1e-2 * (hi - lo))

    # What gets measured.
    never = np.stack([rng.random(n) < NEVER_MEASURED.get(s, 0.02) for s in names], axis=1)
    np_choice = rng.random(n)  # 60 % NT-proBNP only, 25 % BNP only, 15 % both
    never[:, col["bnp"]] |= np_choice < 0.60
    never[:, col["nt_probnp"]] |= (np_choice >= 0.60) & (np_choice < 0.85)
    kind = np.zeros((n, v_n, f_n))
    is_vital = np.array([s in VITALS for s in names])
    is_fu_lab = np.array([s in FOLLOWUP_LABS for s in names])
    is_occ = np.array([s in FOLLOWUP_OCCASIONAL for s in names])
    is_echo = np.array([s in ECHO for s in names])
    p = np.where(is_vital, 0.93, np.where(is_fu_lab, 0.72, np.where(is_occ, 0.18, 0.0)))
    kind[:, 1:, :] = p
    kind[:, 0, :] = np.where(is_echo, 0.9, 0.92)
    echo_visit = np.argmin(np.abs(days[:, 1:] - (discharge[:, None] + 180)), axis=1) + 1
    has_fu_echo = rng.random(n) < 0.55
    kind[rows, echo_visit, :] = np.where(
        is_echo, has_fu_echo[:, None] * 0.95, kind[rows, echo_visit, :]
    )
    kind[rows, last, :] = np.where(is_vital | is_fu_lab, 0.9, kind[rows, last, :])
    measured = rng.random((n, v_n, f_n)) < kind
    measured &= ~never[:, None, :]
    measured &= (days > -99999)[:, :, None]

    # Alternate units for some patients' laboratories.
    n_conv = np.array([len(s.conversions) for s in specs])
    alt_pat = rng.random(n) < ALT_UNIT_PATIENTS
    alt = np.where(
        alt_pat[:, None] & (n_conv > 1)[None, :],
        1 + (rng.random((n, f_n)) * (n_conv - 1)).astype(int),
        0,
    )

    implausible = measured & (rng.random((n, v_n, f_n)) < IMPLAUSIBLE_RATE)
    big = hi * rng.uniform(1.3, 2.5, (n, v_n, f_n))
    val = np.where(implausible, big, val)
    val[:, :, col["lvef"]] = np.where(implausible[:, :, col["lvef"]], 99.6, val[:, :, col["lvef"]])
    return Visits(days.astype(int), n_visits, val, measured, alt, implausible, specs)
