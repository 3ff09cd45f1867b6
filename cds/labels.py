"""The one vocabulary people read: outcomes, data sources (modalities), input groups, inputs.

Cards, the RiskAssessment note, the inbox pages, the charts and ``docs/`` all take their
words from here.  Labels are written in sentence case; inside a sentence a caller asks for
``lower=True``, which lower-cases the first letter unless the word is an abbreviation
("LGE cardiac MRI", "MACCE" stay as they are).
"""

from __future__ import annotations

import datetime as dt
from functools import cache

from cds.clinical_tables import condition_specs, drug_class_specs, feature_specs

OUTCOME_LABELS: dict[str, str] = {
    "death": "All-cause death",
    "cv_death": "Cardiovascular death",
    "rehospitalization": "Rehospitalization (any cause)",
    "cardiology_rehospitalization": "Cardiology rehospitalization",
    "macce": "MACCE",
}
#: The model's data sources (``model.types.MODALITIES``).
MODALITY_LABELS: dict[str, str] = {
    "numeric": "Clinical measurements",
    "text": "Medications and notes",
    "image": "LGE cardiac MRI",
}
#: Column headers where space is short (the full label goes in the abbr title).
MODALITY_SHORT: dict[str, str] = {"numeric": "Meas.", "text": "Notes", "image": "MRI"}
#: Groups of the stored inputs (:class:`cds.scoring.StoredInputs`), in display order.
#: ``measurements`` is the freshness group of vitals, labs and echo together.
INPUT_GROUP_LABELS: dict[str, str] = {
    "demographics": "Demographics",
    "vital": "Vital signs",
    "lab": "Laboratory results",
    "echo": "Echocardiography",
    "condition": "Conditions",
    "medication": "Medication classes",
    "note": "Clinical notes",
    "lge": "LGE cardiac MRI",
    "measurements": "Clinical measurements",
}
TIER_LABELS: dict[str, str] = {"low": "Low", "moderate": "Moderate", "high": "High"}


def lower_first(text: str) -> str:
    """``All-cause death`` -> ``all-cause death``; ``LGE cardiac MRI`` stays."""
    if len(text) > 1 and text[1].isupper():
        return text
    return text[:1].lower() + text[1:]


def _pick(table: dict[str, str], key: str, lower: bool) -> str:
    label = table.get(key, key.replace("_", " "))
    return lower_first(label) if lower else label


def outcome_label(outcome: str, *, lower: bool = False) -> str:
    """The outcome's label (``death`` -> ``All-cause death``)."""
    return _pick(OUTCOME_LABELS, outcome, lower)


def modality_label(modality: str, *, lower: bool = False) -> str:
    """The data source's label (``numeric`` -> ``Clinical measurements``)."""
    return _pick(MODALITY_LABELS, modality, lower)


def group_label(group: str, *, lower: bool = False) -> str:
    """An input group's label (``lab`` -> ``Laboratory results``)."""
    return _pick(INPUT_GROUP_LABELS, group, lower)


@cache
def _input_labels() -> dict[str, str]:
    labels = {f.name: f.label for f in feature_specs()}
    labels.update({f"cond_{c.name}": c.label for c in condition_specs()})
    labels.update({f"med_{d.name}": d.label for d in drug_class_specs()})
    labels.update({"age": "Age", "sex_male": "Male sex"})
    return labels


def input_label(name: str) -> str:
    """A model input's label (``nt_probnp`` -> ``NT-proBNP``, ``med_statin`` -> ``Statin``)."""
    return _input_labels().get(name, name.replace("_", " "))


@cache
def input_groups() -> dict[str, str]:
    """Model input name -> group (``vital``, ``lab``, ``echo``, ``condition``, ``medication``,
    ``demographics``)."""
    groups = {f.name: f.group for f in feature_specs()}
    groups.update({f"cond_{c.name}": "condition" for c in condition_specs()})
    groups.update({f"med_{d.name}": "medication" for d in drug_class_specs()})
    groups.update({"age": "demographics", "sex_male": "demographics"})
    return groups


def when_text(
    as_of: dt.datetime | dt.date | None,
    scored: dt.datetime | None,
    checked: dt.datetime | None = None,
) -> str:
    """The one wording of a prediction's times, wherever a prediction is shown:
    ``data as of 2026-11-02 · scored 2026-12-05 19:31 UTC``, plus ``· checked 2026-12-07
    02:04 UTC, no new data`` when a later nightly run found its inputs unchanged."""

    def utc(v: dt.datetime) -> dt.datetime:
        return v.replace(tzinfo=dt.UTC) if v.tzinfo is None else v.astimezone(dt.UTC)

    parts = []
    if as_of is not None:
        day = utc(as_of).date() if isinstance(as_of, dt.datetime) else as_of
        parts.append(f"data as of {day.isoformat()}")
    if scored is not None:
        parts.append(f"scored {utc(scored):%Y-%m-%d %H:%M} UTC")
    if checked is not None and (scored is None or utc(checked) > utc(scored)):
        parts.append(f"checked {utc(checked):%Y-%m-%d %H:%M} UTC, no new data")
    return " · ".join(parts)
