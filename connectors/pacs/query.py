"""Query helpers shared by the DIMSE and DICOMweb sources."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset

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


#: Attributes asked for at series level (C-FIND return keys, QIDO-RS ``includefield``) and
#: read from a folder's headers for series recognition (``connectors/pacs/recognition.py``),
#: with their tags.  Many PACS answer only their indexed series attributes: what comes back
#: empty is simply unknown.
RECOGNITION_TAGS: dict[str, str] = {
    "SeriesNumber": "00200011",
    "Manufacturer": "00080070",
    "SequenceName": "00180024",
    "ScanningSequence": "00180020",
    "SequenceVariant": "00180021",
    "ImageType": "00080008",
    "InversionTime": "00180082",
    "ContrastBolusAgent": "00180010",
    "ContrastBolusRoute": "00181040",
}


def dataset_text(ds: Dataset, keyword: str) -> str:
    """``keyword`` of ``ds`` as text: multiple values joined by backslashes, "" if absent."""
    value = ds.get(keyword, "")
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def study_ref(patient_id: str, row: Dataset) -> StudyRef:
    """A study-level C-FIND or QIDO-RS answer row as a :class:`StudyRef`.

    Raises:
        DicomInvalid: the row's StudyInstanceUID is not a valid UID.
    """
    from connectors.pacs.cache import check_uid

    mods = dataset_text(row, "ModalitiesInStudy")
    return StudyRef(
        patient_id=patient_id,
        study_instance_uid=check_uid(dataset_text(row, "StudyInstanceUID"), "StudyInstanceUID"),
        study_date=dataset_text(row, "StudyDate"),
        modalities=tuple(m for m in mods.split("\\") if m),
    )


def _number(text: str) -> float | None:
    try:
        value = float(text.split("\\")[0])
    except ValueError:
        return None
    return value if value == value else None  # NaN is unknown


def recognition_fields(values: Mapping[str, str]) -> dict[str, Any]:
    """The recognition attributes of a :class:`SeriesRef` from their text values.

    Args:
        values: keyword -> text (as :func:`dataset_text` gives it); absent keys are empty.
    """
    number = _number(values.get("SeriesNumber", "") or "")
    inversion = _number(values.get("InversionTime", "") or "")
    return {
        "series_number": int(number) if number is not None else None,
        "manufacturer": values.get("Manufacturer", "") or "",
        "sequence_name": values.get("SequenceName", "") or "",
        "scanning_sequence": values.get("ScanningSequence", "") or "",
        "sequence_variant": values.get("SequenceVariant", "") or "",
        "image_type": values.get("ImageType", "") or "",
        "inversion_time_ms": inversion,
        "contrast_agent": values.get("ContrastBolusAgent", "") or "",
        "contrast_route": values.get("ContrastBolusRoute", "") or "",
    }


def dataset_recognition_fields(ds: Dataset) -> dict[str, Any]:
    """:func:`recognition_fields` of a C-FIND identifier or QIDO-RS result."""
    return recognition_fields({k: dataset_text(ds, k) for k in RECOGNITION_TAGS})
