"""``Prediction.inputs``: the one stored shape of what the model saw, written by every scorer
and read by the cards, the inbox and ``mprtm patient``.

Stored JSON (``version`` 2)::

    {"version": 2,
     "items": [{"name": "nt_probnp", "group": "lab", "value": 2450.0, "unit": "pg/mL",
                "date": "2026-11-01", "source": "Observation/o7", "original": "..."}, ...]}

Groups: ``demographics``, ``vital``, ``lab``, ``echo``, ``condition``, ``medication``
(class flags), ``note`` (a DocumentReference used in the text, with its date) and ``lge``
(the LGE series: value is its slice count, source its SeriesInstanceUID, date the study
date).  Labels come from :mod:`cds.labels`.

Rows written before this shape are read by :meth:`StoredInputs.from_json` too: the
nightly batch's ``{"features": {...}, "notes": [...], "lge_series": {...}}``, the on-demand
scorer's summary (the same keys plus ``freshness`` and ``image_series``), a bare
``{"freshness": {...}}`` and a flat ``{name: {"value", "unit", "date", "source"}}``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from cds.labels import INPUT_GROUP_LABELS, input_groups
from cds.mapping import MappedPatient

VERSION = 2
#: Freshness groups (newest date among their items), in the order the cards list them.
FRESHNESS_GROUPS: dict[str, tuple[str, ...]] = {
    "measurements": ("vital", "lab", "echo"),
    "medication": ("medication",),
    "note": ("note",),
    "lge": ("lge",),
}
#: Freshness keys of rows written before ``version`` 2.
_OLD_FRESHNESS = {
    "clinical indicators": "measurements",
    "medications": "medication",
    "notes": "note",
    "LGE cardiac MRI": "lge",
}


@dataclass(frozen=True)
class StoredInput:
    """One input as stored and shown.

    Args:
        name: model input name (``nt_probnp``), or a note's / series' reference.
        group: one of :data:`cds.labels.INPUT_GROUP_LABELS`.
        value: the value in ``unit`` (a number; None for a note).
        unit: the canonical unit ("" for flags and notes).
        date: ISO date of the value (effective date, authored date, study date), if known.
        source: where it came from: ``Observation/o7`` or a DICOM SeriesInstanceUID.
        original: the value as recorded when a unit was converted (``1.1 mg/dL``).
    """

    name: str
    group: str
    value: float | None = None
    unit: str = ""
    date: str | None = None
    source: str = ""
    original: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "group": self.group,
            "value": self.value,
            "unit": self.unit,
            "date": self.date,
            "source": self.source,
        }
        if self.original:
            out["original"] = self.original
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any], name: str = "") -> StoredInput:
        """An item from its stored dict (old spellings ``effective``, ``source_id`` read)."""
        name = str(raw.get("name") or name)
        source: Any = raw.get("source") or raw.get("source_id") or raw.get("sources") or ""
        if isinstance(source, list | tuple):
            source = ", ".join(str(s) for s in source)
        date = raw.get("date") or raw.get("effective")
        return cls(
            name=name,
            group=str(raw.get("group") or input_groups().get(name, "other")),
            value=_number(raw.get("value")),
            unit=str(raw.get("unit") or ""),
            date=str(date)[:10] if date else None,
            source=str(source),
            original=str(raw.get("original") or ""),
        )


@dataclass(frozen=True)
class StoredInputs:
    """Every input of one prediction (see the module docstring for the JSON).

    Args:
        items: the inputs, in the order they were written.
        freshness_only: newest date per freshness group, for old rows that stored nothing
            else (empty otherwise).
    """

    items: tuple[StoredInput, ...] = ()
    freshness_only: dict[str, str | None] = field(default_factory=dict)

    # -- writing -----------------------------------------------------------------------
    @classmethod
    def from_mapped(
        cls,
        mapped: MappedPatient,
        *,
        lge_series_uid: str | None = None,
        lge_study_date: dt.date | None = None,
        lge_slices: int | None = None,
    ) -> StoredInputs:
        """The inputs of a mapped patient.

        Args:
            mapped: the patient as the pipeline mapped it.
            lge_series_uid: the LGE series used when it is not ``mapped.lge_series``
                (on demand the image comes from the cache table).
            lge_study_date: that series' study date.
            lge_slices: that series' slice count.
        """
        groups = input_groups()
        items = [
            StoredInput(
                name=name,
                group=groups.get(name, "other"),
                value=float(f.value),
                unit=f.unit,
                date=f.date.isoformat() if f.date else None,
                source=f.source,
                original=f.original,
            )
            for name, f in sorted(mapped.features.items())
        ]
        for ref in mapped.notes:
            day = mapped.note_dates.get(ref)
            items.append(
                StoredInput(ref, "note", date=day.isoformat() if day else None, source=ref)
            )
        series = mapped.lge_series
        if series is not None:
            items.append(
                StoredInput(
                    name="lge_series",
                    group="lge",
                    value=float(mapped.n_slices) if mapped.n_slices else None,
                    unit="slices",
                    date=_dicom_date(series.study_date),
                    source=series.series_instance_uid,
                )
            )
        elif lge_series_uid:
            items.append(
                StoredInput(
                    name="lge_series",
                    group="lge",
                    value=float(lge_slices) if lge_slices else None,
                    unit="slices",
                    date=lge_study_date.isoformat() if lge_study_date else None,
                    source=lge_series_uid,
                )
            )
        return cls(tuple(items))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": VERSION, "items": [i.to_json() for i in self.items]}
        if self.freshness_only:
            out["freshness"] = dict(self.freshness_only)
        return out

    # -- reading -----------------------------------------------------------------------
    @classmethod
    def from_json(cls, raw: Any) -> StoredInputs:
        """Any stored ``Prediction.inputs`` (current or older shapes); junk reads as empty."""
        if not isinstance(raw, dict):
            return cls()
        fresh = raw.get("freshness")
        freshness_only = (
            {
                _OLD_FRESHNESS.get(str(k), str(k)): (str(v)[:10] if v else None)
                for k, v in fresh.items()
            }  # fmt: skip
            if isinstance(fresh, dict)
            else {}
        )
        if raw.get("version") == VERSION:
            items = [
                StoredInput.from_json(i) for i in raw.get("items") or [] if isinstance(i, dict)
            ]
            return cls(tuple(items), freshness_only)
        if "features" in raw or "lge_series" in raw:
            return cls(_old_summary_items(raw), {} if raw.get("features") else freshness_only)
        items = [
            StoredInput.from_json(v if isinstance(v, dict) else {"value": v}, name=str(k))
            for k, v in sorted(raw.items())
            if k != "freshness"
        ]
        return cls(tuple(i for i in items if i.value is not None or i.date), freshness_only)

    def get(self, name: str) -> StoredInput | None:
        return next((i for i in self.items if i.name == name), None)

    def grouped(self) -> list[tuple[str, list[StoredInput]]]:
        """(group, items) in the display order of :data:`cds.labels.INPUT_GROUP_LABELS`."""
        order = list(INPUT_GROUP_LABELS)
        by: dict[str, list[StoredInput]] = {}
        for item in self.items:
            by.setdefault(item.group, []).append(item)
        return sorted(by.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)

    def freshness(self) -> dict[str, str | None]:
        """Newest date per freshness group (:data:`FRESHNESS_GROUPS`); {} when unknown."""
        if not self.items:
            return dict(self.freshness_only)
        out: dict[str, str | None] = {}
        for key, groups in FRESHNESS_GROUPS.items():
            dates = [i.date for i in self.items if i.group in groups and i.date]
            out[key] = max(dates) if dates else None
        return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _dicom_date(value: str | None) -> str | None:
    """``20260301`` -> ``2026-03-01`` (None when not a DICOM date)."""
    if not value or len(value) != 8 or not value.isdigit():
        return None
    return f"{value[:4]}-{value[4:6]}-{value[6:]}"


def _old_summary_items(raw: dict[str, Any]) -> tuple[StoredInput, ...]:
    """Items of the batch's and the on-demand scorer's summaries written before version 2."""
    features = raw.get("features")
    if not isinstance(features, dict):
        features = {}
    items = [
        StoredInput.from_json(f, name=str(name))
        for name, f in sorted(features.items())
        if isinstance(f, dict)
    ]
    items += [
        StoredInput(str(ref), "note", source=str(ref))
        for ref in raw.get("notes") or []
        if isinstance(ref, str)
    ]
    lge = raw.get("lge_series")
    if isinstance(lge, dict) and lge.get("series_instance_uid"):
        slices = _number(lge.get("n_slices") or raw.get("n_slices"))
        items.append(
            StoredInput(
                "lge_series",
                "lge",
                value=slices or None,
                unit="slices",
                date=_dicom_date(str(lge.get("study_date") or "")),
                source=str(lge["series_instance_uid"]),
            )
        )
    elif isinstance(raw.get("image_series"), str):
        items.append(StoredInput("lge_series", "lge", unit="slices", source=raw["image_series"]))
    return tuple(items)
