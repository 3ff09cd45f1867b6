"""FHIR date/dateTime values (date, datetime or partial strings) as calendar days."""

from __future__ import annotations

import datetime as dt
from typing import Any


def to_day(value: Any) -> dt.date | None:
    """The calendar day of a FHIR date, dateTime or instant; a partial date (``2024`` or
    ``2024-05``) counts as its first day.  None when absent or unreadable."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    try:
        if len(text) == 4:
            return dt.date(int(text), 1, 1)
        if len(text) == 7:
            return dt.date(int(text[:4]), int(text[5:7]), 1)
        return dt.date.fromisoformat(text[:10])
    except ValueError:
        return None


def sort_key(value: Any) -> str:
    """A string that orders FHIR date/dateTime values chronologically (UTC when zoned)."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value or "")


def years_between(born: dt.date, on: dt.date) -> int:
    """Completed years from ``born`` to ``on``."""
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))
