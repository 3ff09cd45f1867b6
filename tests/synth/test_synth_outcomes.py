"""The outcome model: closed-form risks match sampled labels; each modality carries signal."""

from __future__ import annotations

from datetime import date

import numpy as np

from cds.synth import outcomes
from cds.synth.cohort import creatinine_from_egfr, generate_cohort


def test_labels_follow_the_closed_form_risks() -> None:
    c = generate_cohort(40_000, 3, date(2026, 1, 1))
    h = outcomes.components(c).hazards()
    p = outcomes.probabilities(h)
    lab = outcomes.sample(h, 3)
    for o in outcomes.OUTCOMES:
        assert abs(p[o].mean() - lab.outcome(o).mean()) < 0.01, o
    assert 0.12 < p["death"].mean() < 0.25  # hospitalised-HF registries: ~15-25 % at 1 year
    assert (lab.cv_death <= lab.death).all() and (
        lab.cardiology_rehospitalization <= lab.rehospitalization
    ).all()
    assert ((lab.rehosp_days > 0) == lab.rehospitalization).all() and lab.rehosp_days.max() <= 365


def test_every_modality_adds_signal() -> None:
    c = generate_cohort(40_000, 4, date(2026, 1, 1))
    comp = outcomes.components(c)
    sig = outcomes.modality_signal(comp, outcomes.sample(comp.hazards(), 4))
    death = sig["death"]
    assert death["true_risk"] > 0.82
    for m in outcomes.MODALITIES:
        assert death[f"{m}_only"] > 0.6
        assert death[f"without_{m}"] < death["true_risk"] - 0.01


def test_maggic_points_of_a_known_patient() -> None:
    c = generate_cohort(1, 0, date(2026, 1, 1))
    c.age[:] = 72  # 70-74 with EF 25-29 -> 6
    c.values["lvef"][:] = 27  # 5
    c.values["sbp"][:] = 115  # 110-119, EF < 30 -> 4
    c.values["bmi"][:] = 23  # 3
    c.values["creatinine"][:] = 140  # 130-149 -> 3
    c.values["nyha_class"][:] = 3  # 6
    c.male[:] = True  # 1
    c.current_smoker[:] = False
    c.conditions["diabetes"][:] = True  # 3
    c.conditions["pulmonary_disease"][:] = False
    c.hf_months[:] = 24  # 2
    c.drug_classes["beta_blocker"][:] = False  # 3
    c.drug_classes["acei"][:] = True
    assert outcomes.maggic_score(c)[0] == 6 + 5 + 4 + 3 + 3 + 6 + 1 + 3 + 2 + 3


def test_creatinine_inverts_ckd_epi_2021() -> None:
    age = np.array([40.0, 70.0, 85.0, 60.0])
    male = np.array([True, False, True, False])
    egfr = np.array([110.0, 45.0, 20.0, 95.0])
    scr = creatinine_from_egfr(egfr, age, male) / 88.42
    k = np.where(male, 0.9, 0.7)
    a = np.where(male, -0.302, -0.241)
    back = (
        142
        * np.minimum(scr / k, 1) ** a
        * np.maximum(scr / k, 1) ** -1.2
        * 0.9938**age
        * np.where(male, 1.0, 1.012)
    )
    assert np.allclose(back, egfr)
