"""Clinical narrative: a discharge summary and follow-up notes per patient.

The notes carry signals that no coded resource carries (see
:data:`cds.synth.cohort.NOTE_SIGNALS`): medication non-adherence, living alone,
worsening breathlessness, low mood and frailty.  A present signal is written in one of
several phrasings in most (not all) notes; an absent one is sometimes negated
explicitly ("denies worsening breathlessness"), so a keyword counter is not enough.
Notes never contain names, addresses or birth dates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POSITIVE: dict[str, tuple[str, ...]] = {
    "nonadherence": (
        "Admits to missing several doses of {drug} over the past weeks.",
        "Pill organiser brought to clinic: many evening doses untaken.",
        "Stopped taking {drug} on {pos} own because of side effects, did not tell the GP.",
        "Ran out of tablets about two weeks ago and has not collected the repeat prescription.",
        "Reports often forgetting {pos} medicines, especially at weekends.",
        "Pharmacy refill records show gaps of more than a month.",
    ),
    "lives_alone": (
        "Lives alone in a second-floor flat; a daughter visits at weekends.",
        "Widowed and lives alone; no carers at present.",
        "Lives on {pos} own, neighbours help occasionally with shopping.",
        "Social: lives alone, limited family support nearby.",
    ),
    "worsening_dyspnoea": (
        "Reports increasing shortness of breath on exertion over the last month; now "
        "breathless after one flight of stairs.",
        "New orthopnoea, now sleeping on three pillows; more breathless than at the last visit.",
        "Breathlessness walking to the shops has worsened; had to stop twice on the way.",
        "Complains of worsening dyspnoea and waking at night short of breath.",
    ),
    "depression": (
        "Mood low, poor sleep and loss of interest in usual activities; PHQ-9 score 15.",
        "Tearful during the consultation and feels hopeless about the future.",
        "Reports feeling down most days since discharge; started sertraline by the GP.",
        "Screening suggests moderate depression; referred to psychology.",
    ),
    "frailty": (
        "Two falls at home since the last visit; now walks with a frame.",
        "Needs help with bathing and shopping; gait slow and unsteady.",
        "Clinical frailty scale 6; largely housebound.",
        "Weight loss and weakness; struggles to get out of a chair without help.",
    ),
}  # fmt: skip
NEGATIVE: dict[str, tuple[str, ...]] = {
    "nonadherence": (
        "Reports taking all medicines as prescribed.",
        "Uses a weekly pill organiser; no missed doses.",
        "Adherence good by pill count.",
    ),
    "lives_alone": (
        "Lives with {pos} spouse, who attends clinic too.",
        "Lives with {pos} daughter's family.",
        "Married, lives with partner; good family support.",
    ),
    "worsening_dyspnoea": (
        "Breathing stable; no orthopnoea or paroxysmal nocturnal dyspnoea.",
        "Denies worsening shortness of breath.",
        "Exercise tolerance unchanged, walks about a mile on the flat.",
    ),
    "depression": ("Mood good.", "In good spirits.", "Denies low mood."),
    "frailty": (
        "Independent in daily activities and walks daily.",
        "No falls; mobile without aids.",
    ),
}  # fmt: skip
FILLER = (
    "Diet reviewed; advised salt restriction below 5 g a day.",
    "Asked about daily weights; keeps a diary.",
    "Flu vaccination given this season.",
    "Discussed fluid restriction of 1.5 litres.",
    "Mild ankle swelling in the evenings.",
    "Sleeps well.",
    "Enjoys gardening when the weather allows.",
    "No chest pain.",
    "No palpitations or syncope.",
)
PRESENTATION = (
    "progressive breathlessness and ankle swelling over two weeks",
    "acute pulmonary oedema",
    "orthopnoea, weight gain and reduced exercise tolerance",
    "breathlessness at rest and bilateral leg oedema",
)


@dataclass
class NoteContext:
    """What a note may mention about one patient.

    Args:
        male: sex, for pronouns.
        age: years.
        hf_label: e.g. "heart failure with reduced ejection fraction".
        comorbidities: condition labels (lower case).
        signals: note-only signal -> present.
        drugs: drug names active at discharge (for the medication list and adherence).
    """

    male: bool
    age: float
    hf_label: str
    comorbidities: list[str]
    signals: dict[str, bool]
    drugs: list[str]


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(0, len(options)))]


def _signal_sentences(
    rng: np.random.Generator, ctx: NoteContext, which: tuple[str, ...], p_pos: float
) -> list[str]:
    pos = "his" if ctx.male else "her"
    drug = ctx.drugs[int(rng.integers(0, len(ctx.drugs)))] if ctx.drugs else "the water tablets"
    out = []
    for s in which:
        if ctx.signals.get(s):
            if rng.random() < p_pos:
                out.append(_pick(rng, POSITIVE[s]).format(pos=pos, drug=drug))
        elif rng.random() < 0.45:
            out.append(_pick(rng, NEGATIVE[s]).format(pos=pos, drug=drug))
    return out


def discharge_summary(
    rng: np.random.Generator, ctx: NoteContext, ef: float, los: int, meds: list[str]
) -> str:
    """The discharge summary of the index hospitalization."""
    who = f"{int(ctx.age)}-year-old {'man' if ctx.male else 'woman'}"
    hist = ", ".join(ctx.comorbidities) if ctx.comorbidities else "no significant past history"
    lines = [
        "DISCHARGE SUMMARY - CARDIOLOGY",
        f"{who} admitted with {_pick(rng, PRESENTATION)}.",
        f"Diagnosis: {ctx.hf_label}. Past history: {hist}.",
        f"Echocardiogram: left ventricular ejection fraction {ef:.0f}%.",
        f"Treated with intravenous diuretics; length of stay {los} days.",
    ]
    lines += _signal_sentences(rng, ctx, ("lives_alone", "frailty", "depression"), 0.85)
    lines.append("Discharge medications: " + ("; ".join(meds) if meds else "none") + ".")
    lines.append(_pick(rng, FILLER))
    lines.append("Plan: heart failure clinic in 4 weeks, uptitrate therapy as tolerated.")
    return "\n".join(lines) + "\n"


def followup_note(
    rng: np.random.Generator, ctx: NoteContext, visit: int, last: bool, vitals: dict[str, float]
) -> str:
    """A heart-failure clinic follow-up note; signals become likelier towards the last visit."""
    p = 0.85 if last else 0.55
    lines = [f"HEART FAILURE CLINIC - FOLLOW-UP VISIT {visit}"]
    sig = ["worsening_dyspnoea", "nonadherence", "depression", "frailty", "lives_alone"]
    order = rng.permutation(len(sig))
    lines += _signal_sentences(rng, ctx, tuple(sig[i] for i in order), p)
    if "sbp" in vitals and "dbp" in vitals:
        hr = f", heart rate {vitals['heart_rate']:.0f}/min" if "heart_rate" in vitals else ""
        lines.append(f"Blood pressure {vitals['sbp']:.0f}/{vitals['dbp']:.0f} mmHg{hr}.")
    if "weight" in vitals:
        lines.append(f"Weight {vitals['weight']:.1f} kg.")
    for _ in range(int(rng.integers(1, 3))):
        lines.append(_pick(rng, FILLER))
    lines.append(
        _pick(rng, ("Continue current therapy.", "Review in 3 months.", "Bloods in 2 weeks."))
    )
    return "\n".join(lines) + "\n"
