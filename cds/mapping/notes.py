"""DocumentReferences -> the notes part of the model's text.

The ``max_notes`` most recent current notes dated on or before the as-of date (and not
older than ``window_days``), newest first.  A note counts when its status is ``current``
(or absent) and its docStatus is not ``entered-in-error``; its date is
``DocumentReference.date``, else the context period.  Notes whose text the source could
not read are skipped (the source already warned).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fhir.resources.R4B.documentreference import DocumentReference

from cds.mapping._dates import sort_key, to_day


@dataclass(frozen=True)
class Note:
    ref: str
    date: dt.date | None
    text: str


def recent_notes(
    documents: list[DocumentReference],
    texts: dict[str, str],
    *,
    as_of: dt.date,
    max_notes: int,
    window_days: int,
) -> list[Note]:
    """Up to ``max_notes`` notes, newest first."""
    start = as_of - dt.timedelta(days=window_days)
    found: list[tuple[str, Note]] = []
    for doc in documents:
        if doc.status and str(doc.status) != "current":
            continue
        if doc.docStatus and str(doc.docStatus) == "entered-in-error":
            continue
        raw = doc.date
        if raw is None and doc.context is not None and doc.context.period is not None:
            raw = doc.context.period.end or doc.context.period.start
        day = to_day(raw)
        if day is not None and (day > as_of or day < start):
            continue
        ref = f"DocumentReference/{doc.id}"
        text = texts.get(ref, "").strip()
        if not text:
            continue
        found.append((sort_key(raw), Note(ref, day, text)))
    found.sort(key=lambda t: (t[0], t[1].ref), reverse=True)
    return [n for _, n in found[: max(0, max_notes)]]
