"""Labels and formatting shared by the inbox's templates (registered as Jinja filters)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from cds.db.models import Alert, Prediction
from cds.explain import contribution_parts, signed_points
from cds.labels import OUTCOME_LABELS, group_label, input_label, outcome_label
from cds.scoring import StoredInput, StoredInputs, parse_dicom_date
from model.types import MODALITIES, OUTCOMES

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


def fmt_dicom_date(value: str | None) -> str:
    """A DICOM ``YYYYMMDD`` as ``5 Nov 2026``; "date unknown" when it is not one."""
    day = parse_dicom_date(value)
    return f"{day.day} {day:%b %Y}" if day else "date unknown"


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


@dataclass(frozen=True)
class InputRow:
    """One row of the key-inputs table."""

    name: str
    label: str
    value: str
    unit: str
    date: str
    source: str
    original: str = ""


@dataclass(frozen=True)
class InputGroup:
    """A heading of the key-inputs table and its rows."""

    group: str
    label: str
    rows: list[InputRow]


def _fmt_value(item: StoredInput) -> str:
    if item.group == "note":
        return "in the text"
    if item.value is None:
        return "—"
    if item.group in ("condition", "medication") or item.name == "sex_male":
        return "yes" if item.value >= 0.5 else "no"
    if item.group == "lge":
        return f"{item.value:.0f}"
    return f"{item.value:.4g}"


def _row_label(item: StoredInput) -> str:
    if item.group == "note":
        return "Clinical note"
    if item.group == "lge":
        return "LGE series"
    return input_label(item.name)


def input_groups(inputs: Any) -> list[InputGroup]:
    """The key-inputs table from ``Prediction.inputs`` (any stored shape, read by
    :meth:`cds.scoring.StoredInputs.from_json`), grouped: demographics, vitals, labs,
    echo, conditions, medication classes, notes with dates, the LGE series."""
    out = []
    for group, items in StoredInputs.from_json(inputs).grouped():
        rows = [
            InputRow(
                name=i.name,
                label=_row_label(i),
                value=_fmt_value(i),
                unit=i.unit,
                date=i.date or "",
                source=i.source,
                original=i.original,
            )
            for i in items
        ]
        out.append(InputGroup(group, group_label(group), rows))
    return out


@dataclass(frozen=True)
class Person:
    """Age and sex of a patient as the model saw them (from the alert's prediction)."""

    age: str
    sex: str

    @property
    def text(self) -> str:
        return " ".join(x for x in (self.age, self.sex) if x) or "—"


def people(session: Session, alerts: list[Alert]) -> dict[int, Person]:
    """Patient row id -> :class:`Person`, read from each alert's prediction inputs."""
    ids = [a.prediction_id for a in alerts if a.prediction_id]
    preds = {p.id: p for p in session.scalars(select(Prediction).where(Prediction.id.in_(ids)))}
    out = {}
    for a in alerts:
        pred = preds.get(a.prediction_id or -1)
        stored = StoredInputs.from_json(pred.inputs if pred else None)
        age, male = stored.get("age"), stored.get("sex_male")
        out[a.patient_id] = Person(
            age=f"{age.value:.0f} y" if age and age.value is not None else "",
            sex="" if male is None or male.value is None else ("M" if male.value >= 0.5 else "F"),
        )
    return out


@dataclass(frozen=True)
class MetricTable:
    """One table of the model page: rows (an outcome, a metric) by columns."""

    title: str
    columns: list[str]
    rows: list[tuple[str, list[str]]]


def _metric_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, list | tuple) and all(isinstance(v, int | float) for v in value):
            return "[" + ", ".join(f"{float(v):.3g}" for v in value) + "]"
        return str(value)
    return f"{float(value):.3g}"


def metric_tables(metrics: Any, title: str = "") -> list[MetricTable]:
    """``ModelVersion.metrics`` (nested dicts and lists) as tables: a dict of dicts of
    values becomes one table (rows: its keys, e.g. outcomes; columns: the inner keys, e.g.
    AUROC, Brier, ECE); loose values gather in a table of their own."""
    if isinstance(metrics, list):
        out: list[MetricTable] = []
        for i, item in enumerate(metrics, 1):
            out += metric_tables(item, f"{title} › {i}" if title else str(i))
        return out
    if not isinstance(metrics, dict):
        return []
    loose = [(str(k), v) for k, v in metrics.items() if not isinstance(v, dict | list)]
    inner = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    tables: list[MetricTable] = []
    flat = {
        k: v for k, v in inner.items() if all(not isinstance(x, dict | list) for x in v.values())
    }
    if flat and len(flat) == len(inner) and not loose:
        columns = sorted({c for v in flat.values() for c in v})
        rows = [
            (outcome_label(k) if k in OUTCOME_LABELS else str(k).replace("_", " "),
             [_metric_value(v.get(c, "—")) if c in v else "—" for c in columns])
            for k, v in flat.items()
        ]  # fmt: skip
        return [MetricTable(title or "Metrics", columns, rows)]
    if loose:
        tables.append(
            MetricTable(title or "Metrics", ["value"], [(k, [_metric_value(v)]) for k, v in loose])
        )
    for k, v in metrics.items():
        if isinstance(v, dict | list):
            tables += metric_tables(v, f"{title} › {k}" if title else str(k))
    return tables


_REFERENCE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")


def source_url(fhir_base_url: str, source: str) -> str | None:
    """The FHIR server URL of a ``Type/id`` source (None without a server or for a DICOM
    UID)."""
    if not fhir_base_url or not _REFERENCE.match(source):
        return None
    return f"{fhir_base_url.rstrip('/')}/{source}"


_MD = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def render_markdown(text: str) -> Markup:
    """Markdown to HTML with raw HTML escaped and unsafe link schemes dropped.

    markdown-it-py with ``html=False`` escapes every HTML tag in the source, and its
    link validator refuses ``javascript:``, ``vbscript:``, ``file:`` and non-image
    ``data:`` URLs, so a model card cannot inject markup or script.
    """
    return Markup(_MD.render(text or ""))  # noqa: S704  (rendered with html disabled)
