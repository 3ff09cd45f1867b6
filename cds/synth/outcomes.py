"""The outcome model: competing exponential event processes over one year.

Every event type ``k`` (a cause of death or of rehospitalization) is an independent
exponential process with a one-year cumulative hazard
``H_k = exp(base_k + clinical_k + image_k + text_k)``; each term is the part of the
log-hazard that one modality carries:

* clinical: the MAGGIC integer risk score (Pocock et al., Eur Heart J 2013; 1-year
  mortality ~= 1 - exp(-exp(-4.19 + 0.096 * score))), NT-proBNP and coded comorbidities;
* image: LGE presence and extent (Gulati et al. JAMA 2013; Kuruvilla et al. JACC
  Cardiovasc Imaging 2014);
* text: signals that only the notes carry (non-adherence, living alone, worsening
  breathlessness, depression, frailty).

Because the processes are exponential and independent, every outcome probability has
a closed form (:func:`probabilities`), and the sampled labels follow it exactly.
``docs/synthetic-cohort.md`` gives the numbers and their sources.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

from cds.synth.cohort import Cohort

MODALITIES: tuple[str, ...] = ("clinical", "image", "text")
OUTCOMES: tuple[str, ...] = (
    "death",
    "cv_death",
    "rehospitalization",
    "cardiology_rehospitalization",
    "macce",
)
DEATH_CV: tuple[str, ...] = ("d_scd", "d_pump", "d_mi", "d_stroke", "d_ocv")
DEATHS: tuple[str, ...] = (*DEATH_CV, "d_ncv")
HOSP_CARDIO: tuple[str, ...] = ("h_hf", "h_mi", "h_arrhythmia")
HOSPS: tuple[str, ...] = (*HOSP_CARDIO, "h_stroke", "h_other")
MACCE: tuple[str, ...] = (*DEATH_CV, "h_hf", "h_mi", "h_stroke")
PROCESSES: tuple[str, ...] = (*DEATHS, *HOSPS)

CV_DEATH_CAUSE = {
    "d_scd": "sudden cardiac death",
    "d_pump": "pump failure",
    "d_mi": "myocardial infarction",
    "d_stroke": "stroke",
    "d_ocv": "other cardiovascular",
}
MACCE_CAUSE = {
    **{k: "cardiovascular death" for k in DEATH_CV},
    "h_hf": "heart failure hospitalization",
    "h_mi": "myocardial infarction",
    "h_stroke": "stroke",
}

#: Baseline log cumulative 1-year hazards, calibrated once on 200,000 simulated patients
#: so that 1-year death is ~18 % and rehospitalization ~39 % (ESC-HF-LT, hospitalised HF).
BASE: dict[str, float] = {
    "d_scd": -7.216,
    "d_pump": -6.65,
    "d_mi": -7.814,
    "d_stroke": -6.165,
    "d_ocv": -5.97,
    "d_ncv": -4.099,
    "h_hf": -3.561,
    "h_mi": -5.262,
    "h_arrhythmia": -5.262,
    "h_stroke": -4.454,
    "h_other": -1.865,
}
#: Published effects are multiplied by this factor so that the signal of each modality
#: is learnable from a cohort of a few thousand patients (see the docs).
AMPLIFY = 1.5
MAGGIC_PER_POINT = 0.096
#: Gulati 2013: mid-wall fibrosis presence, all-cause mortality HR 2.43.
LGE_PRESENCE_HR = 2.43
#: per percentage point of LV myocardium enhanced (tempered from Gulati's 1.11 per %).
LGE_EXTENT_HR_PER_PCT = 1.04
TEXT_HR_DEATH = {
    "nonadherence": 1.8,
    "lives_alone": 1.5,
    "worsening_dyspnoea": 2.2,
    "depression": 2.0,
    "frailty": 1.9,
}
TEXT_HR_HOSP = {
    "nonadherence": 2.2,
    "lives_alone": 1.4,
    "worsening_dyspnoea": 2.0,
    "depression": 1.5,
    "frailty": 1.6,
}


def maggic_score(c: Cohort) -> np.ndarray:
    """The MAGGIC integer score (Pocock et al. 2013, Table 2) of the current state."""
    v = c.values
    ef = v["lvef"]
    efb = np.digitize(ef, [30, 40])  # 0: <30, 1: 30-39, 2: >=40
    s = np.select([ef < 20, ef < 25, ef < 30, ef < 35, ef < 40], [7, 6, 5, 3, 2], 0).astype(float)
    age_pts = np.array(
        [[0, 0, 0], [1, 2, 3], [2, 4, 5], [4, 6, 7], [6, 8, 9], [8, 10, 12], [10, 13, 15]]
    )
    ab = np.digitize(c.age, [56, 60, 65, 70, 75, 80])
    s += age_pts[ab, efb]
    sbp_pts = np.array([[5, 3, 2], [4, 2, 1], [3, 1, 1], [2, 1, 0], [1, 0, 0], [0, 0, 0]])
    s += sbp_pts[np.digitize(v["sbp"], [110, 120, 130, 140, 150]), efb]
    s += np.array([6, 5, 3, 2, 0])[np.digitize(v["bmi"], [15, 20, 25, 30])]
    s += np.array([0, 1, 2, 3, 4, 5, 6, 8])[
        np.digitize(v["creatinine"], [90, 110, 130, 150, 170, 210, 250])
    ]
    s += np.array([0, 2, 6, 8])[np.clip(v["nyha_class"].astype(int) - 1, 0, 3)]
    s += 1.0 * c.male + 1.0 * c.current_smoker
    s += 3.0 * c.conditions["diabetes"] + 2.0 * c.conditions["pulmonary_disease"]
    s += 2.0 * (c.hf_months >= 18)
    s += 3.0 * ~c.drug_classes["beta_blocker"]
    raas = c.drug_classes["acei"] | c.drug_classes["arb"] | c.drug_classes["arni"]
    s += 1.0 * ~raas
    return s


@dataclass
class Components:
    """Per-process, per-modality log-hazard terms: ``lp[modality][process]`` (n,)."""

    lp: dict[str, dict[str, np.ndarray]]

    def hazards(self, fixed: dict[str, bool] | None = None) -> dict[str, np.ndarray]:
        """One-year cumulative hazards; a modality in ``fixed`` is held at its mean."""
        out = {}
        for k in PROCESSES:
            total = np.full_like(self.lp["clinical"][k], BASE[k])
            for m in MODALITIES:
                term = self.lp[m][k]
                total = total + (
                    np.full_like(term, term.mean()) if fixed and fixed.get(m) else term
                )
            out[k] = np.exp(total)
        return out


def components(c: Cohort) -> Components:
    """Split each process's log-hazard into its clinical, image and text parts."""
    a = AMPLIFY
    v = c.values
    cond = c.conditions
    score = maggic_score(c)
    ln_nt = np.log(v["nt_probnp"] / 2000.0)
    clin = MAGGIC_PER_POINT * (score - 22.0) + 0.25 * ln_nt  # NT-proBNP: assumed HR 1.19/doubling
    af = cond["atrial_fibrillation"].astype(float)
    isch = c.ischaemic.astype(float)
    no_oac = af * ~c.drug_classes["anticoagulant"]
    present = (c.burden > 0).astype(float)
    img = np.log(LGE_PRESENCE_HR) * present + np.log(LGE_EXTENT_HR_PER_PCT) * 100 * c.burden
    txt_d = sum(np.log(TEXT_HR_DEATH[s]) * c.signals[s] for s in TEXT_HR_DEATH)
    txt_h = sum(np.log(TEXT_HR_HOSP[s]) * c.signals[s] for s in TEXT_HR_HOSP)
    txt_d = np.asarray(txt_d, float)
    txt_h = np.asarray(txt_h, float)
    age = (c.age - 70) / 10
    z = np.zeros(c.n)
    lp: dict[str, dict[str, np.ndarray]] = {m: {} for m in MODALITIES}

    def put(k: str, cl: np.ndarray, im: np.ndarray, tx: np.ndarray) -> None:
        lp["clinical"][k], lp["image"][k], lp["text"][k] = cl, im, tx

    # Sudden death is where LGE matters most (Kuruvilla 2014: SCD OR 5.3 vs mortality 3.3).
    put("d_scd", a * (0.8 * clin + 0.2 * isch), a * 1.5 * img, a * 0.6 * txt_d)
    put("d_pump", a * (1.2 * clin + 0.3 * np.log(v["nt_probnp"] / 2000)), a * 0.8 * img, a * txt_d)
    put("d_mi", a * (0.8 * clin + 1.2 * isch), a * 0.8 * img, a * 0.6 * txt_d)
    put("d_stroke", a * (0.6 * clin + 0.9 * no_oac + 0.3 * age), a * 0.3 * img, a * 0.6 * txt_d)
    put("d_ocv", a * 0.8 * clin, a * 0.6 * img, a * 0.6 * txt_d)
    put("d_ncv", a * (0.7 * clin + 0.25 * age), z, a * 0.9 * txt_d)
    put("h_hf", a * (0.7 * clin + 0.2 * ln_nt), a * 0.6 * img, a * txt_h)
    put("h_mi", a * (0.4 * clin + 1.1 * isch), a * 0.4 * img, a * 0.5 * txt_h)
    put("h_arrhythmia", a * (0.3 * clin + 0.8 * af), a * 0.9 * img, a * 0.5 * txt_h)
    put("h_stroke", a * (0.4 * clin + 0.9 * no_oac + 0.3 * age), z, a * 0.4 * txt_h)
    put("h_other", a * (0.25 * clin + 0.2 * age), z, a * 0.6 * txt_h)
    return Components(lp)


def scale_hazards(comp: Components, who: np.ndarray, factor: float) -> None:
    """Multiply every process hazard of the patients ``who`` by ``factor`` (in place; the
    term goes to the clinical part, the only one a site's case mix can change)."""
    term = np.log(factor) * np.asarray(who, float)
    for k in PROCESSES:
        comp.lp["clinical"][k] = comp.lp["clinical"][k] + term


def _first_of(h: dict[str, np.ndarray], keys: tuple[str, ...]) -> np.ndarray:
    return np.asarray(sum(h[k] for k in keys), float)


def probabilities(h: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Exact 1-year probability of each outcome from the process hazards ``h``."""
    hd = _first_of(h, DEATHS)
    hcv = _first_of(h, DEATH_CV)
    hr = _first_of(h, HOSPS)
    hc = _first_of(h, HOSP_CARDIO)
    hm = _first_of(h, MACCE)
    hn = h["d_ncv"]
    return {
        "death": 1 - np.exp(-hd),
        "cv_death": hcv / hd * (1 - np.exp(-hd)),
        "rehospitalization": hr / (hr + hd) * (1 - np.exp(-(hr + hd))),
        "cardiology_rehospitalization": hc / (hc + hd) * (1 - np.exp(-(hc + hd))),
        "macce": hm / (hm + hn) * (1 - np.exp(-(hm + hn))),
    }


@dataclass
class Labels:
    """Sampled 1-year outcomes (arrays of length n; causes as strings, '' when none)."""

    death: np.ndarray
    cv_death: np.ndarray
    cv_death_cause: list[str]
    rehospitalization: np.ndarray
    rehosp_days: np.ndarray  # days to the first rehospitalization, -1 when none
    cardiology_rehospitalization: np.ndarray
    macce: np.ndarray
    macce_cause: list[str]
    death_days: np.ndarray  # -1 when alive at one year
    #: process -> event time in years (the first event of each process, may exceed 1)
    times: dict[str, np.ndarray] = field(default_factory=dict)

    def outcome(self, name: str) -> np.ndarray:
        return np.asarray(getattr(self, name), dtype=bool)


def sample(h: dict[str, np.ndarray], seed: int) -> Labels:
    """Draw event times ``T_k = E_k / H_k`` (years) and derive the labels."""
    rng = np.random.default_rng([seed, 0x0C7C0E])
    n = len(h["d_ncv"])
    t = {k: rng.exponential(1.0, n) / h[k] for k in PROCESSES}

    def first(keys: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        stack = np.stack([t[k] for k in keys])
        return stack.min(axis=0), stack.argmin(axis=0)

    td, _ = first(DEATHS)
    tcv, cv_arg = first(DEATH_CV)
    tr, _ = first(HOSPS)
    tc, _ = first(HOSP_CARDIO)
    tm, m_arg = first(MACCE)
    death = td < 1
    cv = (tcv < 1) & (tcv <= td)
    rehosp = (tr < 1) & (tr < td)
    card = (tc < 1) & (tc < td)
    macce = (tm < 1) & (tm < t["d_ncv"])
    return Labels(
        death=death,
        cv_death=cv,
        cv_death_cause=[
            CV_DEATH_CAUSE[DEATH_CV[a]] if f else "" for a, f in zip(cv_arg, cv, strict=True)
        ],
        rehospitalization=rehosp,
        rehosp_days=np.where(rehosp, np.ceil(tr * 365), -1).astype(int),
        cardiology_rehospitalization=card,
        macce=macce,
        macce_cause=[MACCE_CAUSE[MACCE[a]] if f else "" for a, f in zip(m_arg, macce, strict=True)],
        death_days=np.where(death, np.ceil(td * 365), -1).astype(int),
        times=t,
    )


def auroc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U); NaN when one class is absent."""
    label = np.asarray(label, bool)
    pos = int(label.sum())
    neg = len(label) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[label].sum() - pos * (pos + 1) / 2) / (pos * neg))


def modality_signal(comp: Components, labels: Labels) -> dict[str, dict[str, float]]:
    """AUROC of the true risk, of each modality alone, and of the risk without each one."""
    out: dict[str, dict[str, float]] = {}
    full = probabilities(comp.hazards())
    only = {m: probabilities(comp.hazards({o: o != m for o in MODALITIES})) for m in MODALITIES}
    without = {m: probabilities(comp.hazards({m: True})) for m in MODALITIES}
    for o in OUTCOMES:
        y = labels.outcome(o)
        row = {"prevalence": round(float(y.mean()), 4), "true_risk": auroc(full[o], y)}
        for m in MODALITIES:
            row[f"{m}_only"] = auroc(only[m][o], y)
        for m in MODALITIES:
            row[f"without_{m}"] = auroc(without[m][o], y)
        out[o] = {k: round(val, 4) for k, val in row.items()}
    return out
