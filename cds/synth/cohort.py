"""The latent state of a synthetic heart-failure follow-up cohort (vectorised numpy).

One call draws every patient's demographics, aetiology, HF type, comorbidities, the
*current* (reference-date) values of every clinical feature of ``cds/data/features.csv``
in its canonical unit, the active drug classes, the LGE fibrosis burden and the signals
that only the clinical notes carry.  Visits, resources and images are derived from this
state elsewhere; the outcome model (:mod:`cds.synth.outcomes`) reads it.

Distributions follow published hospitalised-HF registries; the sources are listed in
``docs/synthetic-cohort.md`` (ESC-HF-LT, Chioncel et al. Eur J Heart Fail 2017;
GWTG-HF; MAGGIC, Pocock et al. Eur Heart J 2013).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np

from cds.clinical_tables import feature_specs
from cds.synth import _ids
from cds.synth.shifts import Shifts

HF_TYPES: tuple[str, ...] = ("hfref", "hfmref", "hfpef")
#: Signals that only the notes carry (never coded, never measured).
NOTE_SIGNALS: tuple[str, ...] = (
    "nonadherence",
    "lives_alone",
    "worsening_dyspnoea",
    "depression",
    "frailty",
)
NOTE_SIGNAL_PREVALENCE: dict[str, float] = {
    "nonadherence": 0.20,
    "lives_alone": 0.30,
    "worsening_dyspnoea": 0.20,
    "depression": 0.20,
    "frailty": 0.15,
}


@dataclass
class Cohort:
    """Per-patient arrays (length ``n``) of the latent cohort state.

    Args:
        n: number of patients.
        seed: the generator seed.
        reference_date: the "as of" date: current values hold on this date and the
            1-year outcomes follow it.
    """

    n: int
    seed: int
    reference_date: date
    patient_ids: list[str] = field(default_factory=list)
    mrns: list[str] = field(default_factory=list)
    age: np.ndarray = field(default_factory=lambda: np.zeros(0))
    male: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    height_cm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ischaemic: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    hf_type: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # index into HF_TYPES
    hf_months: np.ndarray = field(default_factory=lambda: np.zeros(0))  # HF duration at ref
    current_smoker: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    #: feature name -> current true value in the canonical unit
    values: dict[str, np.ndarray] = field(default_factory=dict)
    #: condition name (conditions.csv) -> present
    conditions: dict[str, np.ndarray] = field(default_factory=dict)
    #: drug class (medications.csv) -> active on the reference date
    drug_classes: dict[str, np.ndarray] = field(default_factory=dict)
    #: fraction of LV myocardium enhanced (0..1; 0 = no LGE)
    burden: np.ndarray = field(default_factory=lambda: np.zeros(0))
    has_study: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    #: 0 none, 1 localizer, 2 cine: an extra series that series selection must ignore
    extra_series: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    signals: dict[str, np.ndarray] = field(default_factory=dict)
    #: days from the index admission to the reference date
    index_days: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    length_of_stay: np.ndarray = field(default_factory=lambda: np.zeros(0, int))


def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _lognormal(rng: np.random.Generator, median: float | np.ndarray, sd: float, n: int):
    return np.asarray(median) * np.exp(rng.normal(0.0, sd, n))


def creatinine_from_egfr(egfr: np.ndarray, age: np.ndarray, male: np.ndarray) -> np.ndarray:
    """Serum creatinine (umol/L) that gives ``egfr`` by CKD-EPI 2021 (Inker et al. NEJM 2021).

    eGFR = 142 * min(Scr/k, 1)^a * max(Scr/k, 1)^-1.200 * 0.9938^age * 1.012[female],
    with Scr in mg/dL, k = 0.9 (male) / 0.7 (female), a = -0.302 / -0.241.
    """
    kappa = np.where(male, 0.9, 0.7)
    alpha = np.where(male, -0.302, -0.241)
    base = 142.0 * 0.9938**age * np.where(male, 1.0, 1.012)
    ratio = egfr / base
    high = ratio ** (-1.0 / 1.2)  # Scr/k when Scr/k >= 1
    low = ratio ** (1.0 / alpha)  # Scr/k when Scr/k < 1
    scr_k = np.where(high >= 1.0, high, low)
    return scr_k * kappa * 88.42


def generate_cohort(
    n: int, seed: int, reference_date: date, shifts: Shifts | None = None
) -> Cohort:
    """Draw the latent state of ``n`` patients from ``seed`` (deterministic); ``shifts``
    change the case mix (:mod:`cds.synth.shifts`) without changing the random draws."""
    sh = shifts or Shifts()
    rng = np.random.default_rng([seed, 0xC0407])
    c = Cohort(n=n, seed=seed, reference_date=reference_date)
    c.patient_ids = [_ids.patient_id(seed, i) for i in range(n)]
    c.mrns = [_ids.mrn(seed, i) for i in range(n)]

    # Demographics: hospitalised HF registries, mean age ~70, ~60 % men.
    c.age = np.clip(rng.normal(70.0, 12.0, n), 25.0, 97.0).round(1)
    if sh.age:
        c.age = np.clip(c.age + sh.age, 18.0, 104.0).round(1)
    c.male = rng.random(n) < 0.60
    c.height_cm = np.where(c.male, rng.normal(173, 7, n), rng.normal(160, 6.5, n))
    c.ischaemic = rng.random(n) < _sig(-0.45 + 0.03 * (c.age - 70) + 0.6 * c.male)

    # HF phenotype by LVEF (ESC 2021 categories): ~50 % HFrEF, 20 % HFmrEF, 30 % HFpEF.
    u = rng.random(n)
    p_ref = np.where(c.ischaemic, 0.62, 0.42)
    p_mr = np.full(n, 0.20)
    if sh.hfpef is not None:  # keep HFrEF : HFmrEF, give HFpEF the asked share
        rest = (1.0 - sh.hfpef) / (p_ref + p_mr)
        p_ref, p_mr = p_ref * rest, p_mr * rest
    c.hf_type = np.where(u < p_ref, 0, np.where(u < p_ref + p_mr, 1, 2))
    lvef = np.select(
        [c.hf_type == 0, c.hf_type == 1],
        [np.clip(rng.normal(28, 6.5, n), 10, 40), rng.uniform(41, 49.5, n)],
        np.clip(rng.normal(58, 6, n), 50, 75),
    )
    c.hf_months = np.where(
        rng.random(n) < 0.45, rng.uniform(0.5, 17.9, n), _lognormal(rng, 40, 0.6, n)
    )

    cond: dict[str, np.ndarray] = {}
    r = lambda p: rng.random(n) < p  # noqa: E731 - a local Bernoulli draw
    cond["hypertension"] = r(np.clip(0.45 + 0.008 * (c.age - 70) + 0.15 * (c.hf_type == 2), 0, 1))
    cond["diabetes"] = r(0.36)
    cond["atrial_fibrillation"] = r(
        np.clip(0.30 + 0.01 * (c.age - 70) + 0.12 * (c.hf_type == 2), 0, 1)
    )
    cond["pulmonary_disease"] = r(0.16)
    cond["cad"] = np.where(c.ischaemic, r(0.95), r(0.12))
    cond["prior_mi"] = c.ischaemic & r(0.65)
    cond["coronary_stent"] = cond["cad"] & r(0.45)
    c.current_smoker = r(np.clip(0.18 - 0.006 * (c.age - 70), 0.03, 0.5))
    cond["smoking"] = c.current_smoker | r(0.15)
    cond["alcohol"] = r(np.where(c.male, 0.16, 0.05))
    cond["hyperlipidemia"] = r(np.where(cond["cad"], 0.65, 0.35))
    cond["liver_disease"] = r(0.05)
    cond["cerebrovascular"] = r(0.10 + 0.05 * cond["atrial_fibrillation"])
    cond["av_block"] = r(0.07)
    cond["pacemaker"] = r(np.where(cond["av_block"], 0.55, 0.05))
    cond["inflammatory_disease"] = r(0.04)
    cond["other_cv"] = r(0.10)
    cond["adhf"] = r(0.80)
    cond["edema"] = r(0.45)

    # eGFR (CKD-EPI, mL/min/1.73 m2): median ~58 in hospitalised HF, lower with age/diabetes.
    egfr = _lognormal(rng, 62 * np.exp(-0.012 * (c.age - 70) - 0.1 * cond["diabetes"]), 0.38, n)
    egfr = np.clip(egfr, 8, 130)
    cond["ckd"] = (egfr < 60) & r(0.75) | (egfr < 30)
    cond["kidney_disease"] = ~cond["ckd"] & r(0.06)
    c.conditions = cond

    # NYHA class at the reference date.
    sev = rng.normal(0, 1, n) + 0.03 * (35 - np.minimum(lvef, 60)) + 0.012 * (c.age - 70)
    nyha = np.digitize(sev, [-1.3, 0.2, 1.45]) + 1.0

    v: dict[str, np.ndarray] = {}
    v["lvef"] = lvef.round(0)
    v["nyha_class"] = nyha
    v["egfr"] = egfr
    v["creatinine"] = creatinine_from_egfr(egfr, c.age, c.male)
    v["bmi"] = np.clip(rng.normal(27.8, 5.2, n), 15.5, 52)
    v["weight"] = v["bmi"] * (c.height_cm / 100) ** 2
    af = cond["atrial_fibrillation"]
    v["heart_rate"] = np.clip(rng.normal(74, 12, n) + 7 * af + 2.5 * (nyha - 2), 42, 150)
    v["sbp"] = np.clip(
        rng.normal(128, 19, n) - 9 * (c.hf_type == 0) + 6 * cond["hypertension"], 78, 210
    )
    v["dbp"] = np.clip(0.5 * v["sbp"] + rng.normal(11, 8, n), 40, 120)
    ln_nt = (
        7.3
        + 0.45 * (nyha - 2)
        - 0.025 * (lvef - 35)
        + 0.015 * (c.age - 70)
        - 0.008 * (egfr - 60)
        + 0.35 * af
        - 0.01 * (v["bmi"] - 28)
        + rng.normal(0, 0.75, n)
    )
    v["nt_probnp"] = np.clip(np.exp(ln_nt), 60, 60000)
    v["bnp"] = np.clip(v["nt_probnp"] / _lognormal(rng, 6.0, 0.3, n), 10, 9000)
    v["ivstd"] = np.clip(
        rng.normal(10.3, 1.7, n) + 1.0 * (c.hf_type == 2) + 0.8 * cond["hypertension"], 6, 20
    )
    v["lvpwtd"] = np.clip(0.9 * v["ivstd"] + rng.normal(0.6, 0.8, n), 6, 19)
    v["lvdd"] = np.clip(
        np.select(
            [c.hf_type == 0, c.hf_type == 1],
            [rng.normal(63, 7, n), rng.normal(56, 6, n)],
            rng.normal(49, 5, n),
        )
        + 2.5 * c.male,
        35,
        90,
    )
    v["aod"] = np.clip(rng.normal(31.5, 3.5, n) + 2 * c.male, 22, 48)
    v["lad"] = np.clip(rng.normal(43, 6, n) + 5 * af, 28, 70)
    v["tnt"] = np.clip(
        _lognormal(rng, 0.018 * np.exp(0.4 * c.ischaemic) * (60 / egfr) ** 0.5, 0.8, n), 0.003, 2.0
    )
    v["ckmb"] = np.clip(_lognormal(rng, 2.2, 0.55, n), 0.3, 60)
    v["alt"] = np.clip(_lognormal(rng, 23, 0.55, n) * (1 + 0.6 * cond["liver_disease"]), 4, 900)
    v["ast"] = np.clip(_lognormal(rng, 25, 0.45, n) * (1 + 0.5 * cond["liver_disease"]), 6, 900)
    v["ldh"] = np.clip(_lognormal(rng, 215, 0.28, n), 90, 1500)
    v["bilirubin_total"] = np.clip(
        _lognormal(rng, 13.5 * (1 + 0.004 * (v["nt_probnp"] ** 0.5)), 0.45, n), 3, 150
    )
    v["bilirubin_direct"] = v["bilirubin_total"] * rng.uniform(0.18, 0.45, n)
    v["cholinesterase"] = np.clip(rng.normal(7.4, 1.8, n), 2, 14)
    v["albumin"] = np.clip(rng.normal(38, 4.3, n) - 0.6 * (nyha - 2), 22, 52)
    v["globulin"] = np.clip(rng.normal(28, 4.2, n), 16, 45)
    v["total_protein"] = v["albumin"] + v["globulin"]
    v["ag_ratio"] = v["albumin"] / v["globulin"]
    v["glucose"] = np.clip(
        _lognormal(rng, 5.5 * np.where(cond["diabetes"], 1.45, 1.0), 0.18, n), 3.0, 30
    )
    v["hba1c"] = np.clip(5.6 + 1.6 * cond["diabetes"] + rng.normal(0, 0.45, n), 4.2, 14)
    v["urea"] = np.clip(_lognormal(rng, 6.8 * (60 / egfr) ** 0.8, 0.22, n), 1.8, 60)
    v["uric_acid"] = np.clip(rng.normal(440, 110, n) + 1.2 * (60 - egfr), 150, 1100)
    v["triglycerides"] = np.clip(_lognormal(rng, 1.35, 0.45, n), 0.3, 12)
    v["hdl"] = np.clip(rng.normal(1.08, 0.28, n) + 0.15 * ~c.male, 0.4, 2.8)
    v["cholesterol"] = np.clip(rng.normal(4.2, 0.95, n), 2.0, 9.5)
    v["ldl"] = np.clip(v["cholesterol"] - v["hdl"] - v["triglycerides"] / 2.2, 0.4, 7.5)
    v["apoa1"] = np.clip(0.75 + 0.4 * v["hdl"] + rng.normal(0, 0.12, n), 0.5, 2.4)
    v["apob"] = np.clip(0.25 + 0.23 * v["ldl"] + rng.normal(0, 0.1, n), 0.3, 2.2)
    v["calcium"] = np.clip(rng.normal(2.28, 0.11, n), 1.9, 2.8)
    v["phosphorus"] = np.clip(
        rng.normal(1.12, 0.18, n) + 0.006 * np.maximum(0, 45 - egfr), 0.5, 2.6
    )
    v["potassium"] = np.clip(rng.normal(4.25, 0.42, n) + 0.012 * np.maximum(0, 50 - egfr), 2.9, 6.4)
    v["sodium"] = np.clip(rng.normal(139.5, 3.3, n) - 0.9 * (nyha - 2), 122, 150)
    v["chloride"] = np.clip(v["sodium"] - 37 + rng.normal(0, 2.4, n), 85, 115)
    v["crp"] = np.clip(_lognormal(rng, 4.5, 1.0, n), 0.2, 250)
    v["pt"] = np.clip(rng.normal(12.8, 1.2, n), 9.5, 20)
    v["inr"] = v["pt"] / 12.4
    v["aptt"] = np.clip(rng.normal(32.5, 4, n), 22, 55)
    v["tt"] = np.clip(rng.normal(16.8, 1.8, n), 12, 26)
    v["fibrinogen"] = np.clip(rng.normal(3.3, 0.75, n), 1.4, 7.5)
    v["d_dimer"] = np.clip(_lognormal(rng, 0.6, 0.85, n), 0.05, 15)
    v["wbc"] = np.clip(_lognormal(rng, 6.9, 0.26, n), 2.5, 20)
    v["neutrophil_pct"] = np.clip(rng.normal(65, 8, n), 40, 90)
    v["neutrophils"] = v["wbc"] * v["neutrophil_pct"] / 100
    rest = v["wbc"] - v["neutrophils"]
    v["lymphocytes"] = rest * rng.uniform(0.68, 0.78, n)
    v["monocytes"] = rest * rng.uniform(0.17, 0.24, n)
    v["eosinophils"] = rest * rng.uniform(0.02, 0.06, n)
    v["basophils"] = rest * rng.uniform(0.003, 0.012, n)
    hgb = np.where(c.male, rng.normal(136, 16, n), rng.normal(123, 14, n)) - 0.25 * np.maximum(
        0, 60 - egfr
    )
    v["hemoglobin"] = np.clip(hgb, 70, 185)
    v["hematocrit"] = v["hemoglobin"] * rng.normal(0.30, 0.008, n)
    v["rbc"] = v["hemoglobin"] / rng.normal(30.5, 1.8, n)
    v["platelets"] = np.clip(rng.normal(215, 58, n), 60, 520)
    v["tsh"] = np.clip(_lognormal(rng, 2.0, 0.6, n), 0.05, 25)
    v["ft3"] = np.clip(rng.normal(4.3, 0.7, n), 2.0, 8.0)
    v["ft4"] = np.clip(rng.normal(16, 2.6, n), 8, 30)
    names = {s.name for s in feature_specs()}
    missing = names - set(v)
    if missing:  # the tables grew: every feature needs a generator
        raise KeyError(f"no generator for features {sorted(missing)}")
    c.values = v

    # Drug classes active on the reference date (guideline-directed therapy by phenotype).
    ref = c.hf_type == 0
    dc: dict[str, np.ndarray] = {}
    dc["beta_blocker"] = r(np.where(ref, 0.88, np.where(c.hf_type == 1, 0.75, 0.58)))
    raas = r(np.where(ref, 0.86, 0.62))
    kind = rng.random(n)
    p_arni = np.where(ref, 0.42, 0.08)
    dc["arni"] = raas & (kind < p_arni)
    dc["acei"] = raas & (kind >= p_arni) & (kind < p_arni + (1 - p_arni) * 0.55)
    dc["arb"] = raas & ~dc["arni"] & ~dc["acei"]
    dc["mra"] = r(np.where(ref, 0.62, 0.32)) & (v["potassium"] < 5.3)
    dc["sglt2i"] = r(np.where(ref, 0.58, 0.38))
    dc["loop_diuretic"] = r(0.80)
    dc["digoxin"] = r(0.04 + 0.12 * af)
    dc["anticoagulant"] = af & r(0.82)
    dc["antiplatelet"] = cond["cad"] & r(np.where(dc["anticoagulant"], 0.45, 0.9)) | r(0.05)
    dc["statin"] = r(np.where(cond["cad"] | cond["hyperlipidemia"], 0.85, 0.22))
    dc["ezetimibe"] = dc["statin"] & r(0.08)
    dc["fibrate"] = r(0.03)
    dc["pcsk9i"] = cond["cad"] & r(0.02)
    dc["nitrate"] = cond["cad"] & r(0.2)
    dc["ccb"] = cond["hypertension"] & (c.hf_type == 2) & r(0.35)
    dc["ivabradine"] = ref & (v["heart_rate"] > 75) & r(0.12)
    c.drug_classes = dc
    # INR on warfarin (about a third of anticoagulated patients here).
    warf = dc["anticoagulant"] & r(0.33)
    v["inr"] = np.where(warf, np.clip(rng.normal(2.4, 0.5, n), 1.2, 4.5), v["inr"])
    v["pt"] = np.where(warf, v["inr"] * 12.4, v["pt"])

    # LGE fibrosis burden (fraction of myocardium): ischaemic scar is nearly universal and
    # larger; mid-wall/patchy LGE in ~30-35 % of non-ischaemic cardiomyopathy (Gulati et al.
    # JAMA 2013; Kuruvilla et al. JACC CV Imaging 2014).
    lge_present = np.where(c.ischaemic, r(0.92), r(np.where(c.hf_type == 2, 0.25, 0.36)))
    b_isch = _lognormal(rng, 0.13 * np.exp(-0.012 * (lvef - 35)), 0.5, n)
    b_non = _lognormal(rng, 0.045, 0.6, n)
    c.burden = np.where(lge_present, np.clip(np.where(c.ischaemic, b_isch, b_non), 0.01, 0.45), 0.0)
    c.has_study = r(0.85 if sh.lge is None else sh.lge)
    c.extra_series = np.where(c.has_study & r(0.2), 1 + (rng.random(n) < 0.5), 0)

    c.signals = {k: r(p) for k, p in NOTE_SIGNAL_PREVALENCE.items()}
    c.index_days = rng.integers(100, 420, n)
    c.length_of_stay = np.clip(np.round(_lognormal(rng, 7, 0.45, n)), 2, 30).astype(int)
    return c
