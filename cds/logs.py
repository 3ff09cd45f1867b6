"""Logging through the standard library, as text or one JSON object per line.

Log records carry ids only (FHIR logical ids, run ids, UIDs): never names, birth dates
or note text.  :class:`PhiScrubFilter` is a last line of defence that drops the values
of record attributes named like PHI fields.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

_STD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
PHI_FIELD_NAMES = frozenset({"name", "birthdate", "birth_date", "address", "note", "text"})


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with extra attributes as keys."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = value if isinstance(value, int | float | str | bool) else str(value)
        if record.exc_info:
            out["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
        return json.dumps(out, sort_keys=True)


class PhiScrubFilter(logging.Filter):
    """Blank extra attributes whose names are PHI fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key in PHI_FIELD_NAMES & set(vars(record)):
            if key not in _STD_ATTRS:
                setattr(record, key, "[redacted]")
        return True


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(PhiScrubFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("pynetdicom", "httpx", "urllib3", "alembic.runtime.migration", "highdicom"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
