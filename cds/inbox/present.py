"""Labels and formatting shared by the inbox's templates (registered as Jinja filters)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup

from cds.clinical_tables import condition_specs, drug_class_specs, feature_specs
from cds.explain import contribution_parts, signed_points
from model.types import MODALITIES, OUTCOMES

OUTCOME_LABELS = {
    "death": "All-cause death",
    "cv_death": "Cardiovascular death",
    "rehospitalization": "Rehospitalization (any cause)",
    "cardiology_rehospitalization": "Cardiology rehospitalization",
    "macce": "MACCE",
}
MODALITY_LABELS = {
    "numeric": "Clinical measurements",
    "text": "Medications and notes",
    "image": "LGE cardiac MRI",
}
#: Column headers where space is short (the full label goes in the abbr title).
MODALITY_SHORT = {"numeric": "Meas.", "text": "Notes", "image": "MRI"}
REASON_LABELS = {
    "high_tier": "High risk tier",
    "threshold_crossing": "Crossed risk threshold",
    "rise": "Risk rose since last run",
    "fibrosis": "Fibrosis burden",
}
ACTION_LABELS = {
    "created": "raised",
    "refreshed": "refreshed by the batch",
    "acknowledge": "acknowledged",
    "assign": "assigned",
    "snooze": "snoozed",
    "snooze_ended": "snooze ended",
    "resolve": "resolved",
}


def ordered_outcomes(keys: Any) -> list[str]:
    """The model's outcome order first, then any other keys alphabetically."""
    present = set(keys)
    return [o for o in OUTCOMES if o in present] + sorted(present - set(OUTCOMES))


def ordered_modalities(keys: Any) -> list[str]:
    present = set(keys)
    return [m for m in MODALITIES if m in present] + sorted(present - set(MODALITIES))


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """Timestamps read back from SQLite are naive; every stored time is UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def fmt_dt(value: dt.datetime | None) -> str:
    v = as_utc(value)
    return v.strftime("%Y-%m-%d %H:%M UTC") if v else "—"


def fmt_date(value: dt.datetime | dt.date | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, dt.datetime):
        value = as_utc(value)
    return value.strftime("%Y-%m-%d") if value else "—"


def fmt_pct(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{100.0 * float(value):.{digits}f}%"


def fmt_points(value: float | None) -> str:
    """A probability difference as signed percentage points, e.g. ``+8.1 pts``."""
    return "—" if value is None else f"{signed_points(float(value))} pts"


@dataclass(frozen=True)
class ContributionRow:
    """One outcome's risk split by data source (probability units)."""

    outcome: str
    reference: float
    parts: dict[str, float]
    total: float


def contribution_rows(contributions: dict[str, Any] | None) -> list[ContributionRow]:
    """Rows of the contributions table, outcomes in the model's order; [] when not recorded."""
    rows = []
    for o in ordered_outcomes((contributions or {}).keys()):
        parts = contribution_parts(contributions, o)
        if parts is None:
            continue
        sources = {m: parts.get(m, 0.0) for m in MODALITIES}
        rows.append(
            ContributionRow(
                o, parts["reference"], sources, parts["reference"] + sum(sources.values())
            )
        )
    return rows


@cache
def _input_labels() -> dict[str, str]:
    labels = {f.name: f.label for f in feature_specs()}
    labels.update({f"cond_{c.name}": c.label for c in condition_specs()})
    labels.update({f"med_{d.name}": f"{d.label} (medication class)" for d in drug_class_specs()})
    labels.update({"age": "Age", "sex_male": "Male sex"})
    return labels


@dataclass(frozen=True)
class InputRow:
    name: str
    label: str
    value: str
    unit: str
    date: str
    source: str


def _fmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "—"
    return str(value)


def input_rows(inputs: dict[str, Any] | None) -> list[InputRow]:
    """Rows of the key-inputs table from ``Prediction.inputs``.

    Each entry is ``name -> {"value", "unit", "date", "source"}`` (``source``: a FHIR
    reference such as ``Observation/abc`` or a DICOM SeriesInstanceUID, or a list of
    them); a bare value is accepted too.  ``effective`` is read as ``date`` and
    ``source_id``/``sources`` as ``source``.
    """
    rows = []
    for name in sorted((inputs or {}).keys()):
        raw = (inputs or {})[name]
        if isinstance(raw, dict):
            value = raw.get("value")
            unit = str(raw.get("unit") or "")
            date = str(raw.get("date") or raw.get("effective") or "")
            source: Any = raw.get("source") or raw.get("source_id") or raw.get("sources") or ""
        else:
            value, unit, date, source = raw, "", "", ""
        if isinstance(source, list | tuple):
            source = ", ".join(str(s) for s in source)
        rows.append(
            InputRow(
                name,
                _input_labels().get(name, name.replace("_", " ")),
                _fmt_value(value),
                unit,
                date[:25],
                str(source),
            )
        )
    return rows


_MD = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def render_markdown(text: str) -> Markup:
    """Markdown to HTML with raw HTML escaped and unsafe link schemes dropped.

    markdown-it-py with ``html=False`` escapes every HTML tag in the source, and its
    link validator refuses ``javascript:``, ``vbscript:``, ``file:`` and non-image
    ``data:`` URLs, so a model card cannot inject markup or script.
    """
    return Markup(_MD.render(text or ""))  # noqa: S704  (rendered with html disabled)
