"""Query helpers shared by the DIMSE and DICOMweb sources."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from connectors.errors import DicomInvalid

_WILDCARDS = set("*?\\")


@dataclass(frozen=True)
class StudyRef:
    """A study found for a patient (C-FIND or QIDO-RS at study level)."""

    patient_id: str
    study_instance_uid: str
    study_date: str  # YYYYMMDD or ""
    modalities: tuple[str, ...]


def check_patient_id(patient_id: str) -> str:
    """``patient_id`` when it is safe to put in a query.

    A wildcard (``*``, ``?``) or a value separator (backslash) would widen the query to
    other patients, so they are refused.

    Raises:
        DicomInvalid: naming the id.
    """
    pid = patient_id.strip()
    if not pid or len(pid) > 64 or _WILDCARDS & set(pid):
        raise DicomInvalid(
            f"PatientID {patient_id!r} is empty, too long or contains a wildcard/backslash"
        )
    return pid


def _dicom_date(value: dt.date | str | None) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, dt.date):
        return value.strftime("%Y%m%d")
    text = value.replace("-", "")
    try:
        dt.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise DicomInvalid(f"date {value!r} is not YYYYMMDD or YYYY-MM-DD") from None
    return text


def date_range(date_from: dt.date | str | None, date_to: dt.date | str | None) -> str:
    """A DICOM date range matching value (``YYYYMMDD-YYYYMMDD``, open ends allowed)."""
    lo, hi = _dicom_date(date_from), _dicom_date(date_to)
    if not lo and not hi:
        return ""
    if lo and hi and lo > hi:
        raise DicomInvalid(f"date range {lo}-{hi} ends before it starts")
    return f"{lo}-{hi}"
