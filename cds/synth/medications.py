"""Drug catalogue (RxNorm ingredient codes) and per-patient prescription histories.

The drug class of each catalogue entry is the class whose ``medications.csv`` keywords
match its name (a test checks it), so the mapping reads the classes back unchanged.
A history starts at discharge from the index hospitalization (or at a follow-up visit),
may be up-titrated at a follow-up (the old request ``stopped``, the new one ``active``
with ``priorPrescription``) and some drugs are stopped; the drug classes active at the
end equal ``Cohort.drug_classes``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


@dataclass(frozen=True)
class Drug:
    """One catalogue drug.

    Args:
        rxcui: RxNorm ingredient concept (RXCUI).
        name: ingredient name (lower case).
        doses: mg per administration, lowest to target.
        frequency: dosing frequency in words.
        form: dose form in words.
    """

    rxcui: str
    name: str
    doses: tuple[float, ...]
    frequency: str
    form: str = "tablet"


_ER = "extended-release tablet"
CATALOGUE: dict[str, tuple[Drug, ...]] = {
    "beta_blocker": (
        Drug("6918", "metoprolol succinate", (23.75, 47.5, 95.0, 190.0), "once daily", _ER),
        Drug("19484", "bisoprolol", (1.25, 2.5, 5.0, 10.0), "once daily"),
        Drug("20352", "carvedilol", (3.125, 6.25, 12.5, 25.0), "twice daily"),
    ),
    "acei": (
        Drug("29046", "lisinopril", (2.5, 5.0, 10.0, 20.0), "once daily"),
        Drug("3827", "enalapril", (2.5, 5.0, 10.0), "twice daily"),
        Drug("35296", "ramipril", (1.25, 2.5, 5.0, 10.0), "once daily"),
        Drug("54552", "perindopril", (2.0, 4.0, 8.0), "once daily"),
    ),
    "arb": (
        Drug("52175", "losartan", (25.0, 50.0, 100.0, 150.0), "once daily"),
        Drug("69749", "valsartan", (40.0, 80.0, 160.0), "twice daily"),
        Drug("214354", "candesartan", (4.0, 8.0, 16.0, 32.0), "once daily"),
    ),
    "arni": (Drug("1656339", "sacubitril / valsartan", (50.0, 100.0, 200.0), "twice daily"),),
    "mra": (
        Drug("9997", "spironolactone", (12.5, 25.0, 50.0), "once daily"),
        Drug("298869", "eplerenone", (25.0, 50.0), "once daily"),
    ),
    "sglt2i": (
        Drug("1488564", "dapagliflozin", (10.0,), "once daily"),
        Drug("1545653", "empagliflozin", (10.0,), "once daily"),
    ),
    "loop_diuretic": (
        Drug("4603", "furosemide", (20.0, 40.0, 80.0), "once daily"),
        Drug("38413", "torsemide", (10.0, 20.0), "once daily"),
        Drug("1808", "bumetanide", (1.0, 2.0), "once daily"),
    ),
    "digoxin": (Drug("3407", "digoxin", (0.0625, 0.125, 0.25), "once daily"),),
    "antiplatelet": (
        Drug("1191", "aspirin", (75.0, 100.0), "once daily"),
        Drug("32968", "clopidogrel", (75.0,), "once daily"),
        Drug("1116632", "ticagrelor", (90.0,), "twice daily"),
    ),
    "anticoagulant": (
        Drug("1364430", "apixaban", (2.5, 5.0), "twice daily"),
        Drug("1114195", "rivaroxaban", (15.0, 20.0), "once daily"),
        Drug("1546356", "dabigatran", (110.0, 150.0), "twice daily", "capsule"),
        Drug("11289", "warfarin", (2.0, 3.0, 5.0), "once daily in the evening"),
    ),
    "statin": (
        Drug("83367", "atorvastatin", (10.0, 20.0, 40.0, 80.0), "once daily"),
        Drug("301542", "rosuvastatin", (5.0, 10.0, 20.0), "once daily"),
        Drug("36567", "simvastatin", (20.0, 40.0), "once daily at night"),
    ),
    "ezetimibe": (Drug("341248", "ezetimibe", (10.0,), "once daily"),),
    "fibrate": (Drug("8703", "fenofibrate", (145.0,), "once daily"),),
    "pcsk9i": (
        Drug("1665684", "evolocumab", (140.0,), "every 2 weeks", "subcutaneous injection"),
    ),
    "nitrate": (
        Drug("6058", "isosorbide mononitrate", (30.0, 60.0), "once daily", _ER),
    ),
    "ccb": (
        Drug("17767", "amlodipine", (2.5, 5.0, 10.0), "once daily"),
        Drug("4316", "felodipine", (2.5, 5.0, 10.0), "once daily"),
    ),
    "ivabradine": (Drug("1649480", "ivabradine", (2.5, 5.0, 7.5), "twice daily"),),
}  # fmt: skip
#: Drugs outside the model's classes (context for the text branch).
OTHER_DRUGS: tuple[tuple[str, Drug], ...] = (
    ("diabetes", Drug("6809", "metformin", (500.0, 1000.0), "twice daily")),
    ("always", Drug("40790", "pantoprazole", (20.0, 40.0), "once daily")),
    ("uric", Drug("519", "allopurinol", (100.0, 300.0), "once daily")),
)
GDMT = frozenset({"beta_blocker", "acei", "arb", "arni", "mra", "sglt2i"})
ROUTE = {"subcutaneous injection": "subcutaneous"}


def dose_text(drug: Drug, dose: float) -> str:
    """The dosage instruction sentence, e.g. ``Bisoprolol 5 mg tablet: take 1 by mouth...``."""
    mg = f"{dose:g}"
    route = ROUTE.get(drug.form, "by mouth")
    return f"{drug.name.capitalize()} {mg} mg {drug.form}: take one dose {route} {drug.frequency}."


@dataclass
class Prescription:
    """One MedicationRequest to write.

    Args:
        drug_class: class name, or '' for drugs outside the classes.
        drug: the catalogue drug.
        dose: mg per administration.
        visit: visit index at which it was written (0 = discharge from the index stay).
        status: ``active`` or ``stopped``.
        prior: index into the patient's prescription list of the request it replaces.
    """

    drug_class: str
    drug: Drug
    dose: float
    visit: int
    status: str
    prior: int | None = None


def history(
    rng: np.random.Generator,
    active: dict[str, bool],
    n_visits: int,
    extra: dict[str, bool],
    warfarin: bool,
) -> list[Prescription]:
    """One patient's prescriptions; the active set at the last visit equals ``active``."""
    out: list[Prescription] = []
    for cls, drugs in CATALOGUE.items():
        on = active.get(cls, False)
        if cls == "anticoagulant" and on:
            drug = drugs[3] if warfarin else drugs[int(rng.integers(0, 3))]
        else:
            drug = drugs[int(rng.integers(0, len(drugs)))]
        if on:
            final = int(rng.integers(0, len(drug.doses)))
            if cls in GDMT:
                final = max(final, int(rng.integers(0, len(drug.doses))))
            start_visit = (
                0 if n_visits == 1 or rng.random() < 0.78 else int(rng.integers(1, n_visits))
            )
            titrate = (
                final > 0 and start_visit < n_visits - 1 and cls in GDMT and rng.random() < 0.5
            )
            if titrate:
                up_visit = int(rng.integers(start_visit + 1, n_visits))
                out.append(Prescription(cls, drug, drug.doses[final - 1], start_visit, "stopped"))
                out.append(
                    Prescription(cls, drug, drug.doses[final], up_visit, "active", len(out) - 1)
                )
            else:
                out.append(Prescription(cls, drug, drug.doses[final], start_visit, "active"))
        elif cls in GDMT and n_visits > 1 and rng.random() < 0.1:
            out.append(Prescription(cls, drug, drug.doses[0], 0, "stopped"))
    for reason, drug in OTHER_DRUGS:
        if extra.get(reason, False):
            dose = drug.doses[int(rng.integers(0, len(drug.doses)))]
            out.append(Prescription("", drug, dose, 0, "active"))
    return out


def stop_visit(p: Prescription, prescriptions: list[Prescription], n_visits: int) -> int | None:
    """The visit at which a stopped prescription ended (its successor's, or a later visit)."""
    if p.status != "stopped":
        return None
    for q in prescriptions:
        if q.prior is not None and prescriptions[q.prior] is p:
            return q.visit
    return min(p.visit + 1, n_visits - 1)
