"""Which series is the LGE series, and in which order its slices go.

Selection is by configurable patterns (``pacs.lge_patterns`` / ``pacs.exclude_patterns``):
a series qualifies when its SeriesDescription or ProtocolName contains one include pattern
and neither contains an exclude pattern (case-insensitive substrings), so localizers,
scouts and cine series never qualify.  Among qualifying series the most recent study
(StudyDate, not after the as-of date) wins; within that study the series with the most
instances, then the highest SeriesInstanceUID (deterministic).

Slices are ordered by their position along the slice normal: the dot product of
ImagePositionPatient with the cross product of the row and column direction cosines of
ImageOrientationPatient.  When a slice lacks either attribute the series falls back to
InstanceNumber.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
from pydicom import Dataset

from connectors.errors import DicomInvalid
from connectors.pacs.base import SeriesRef


def _matches(text: str, patterns: Sequence[str]) -> bool:
    low = text.lower()
    return any(p.lower() in low for p in patterns if p)


def is_lge(ref: SeriesRef, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """True when the description/protocol names LGE and nothing excluded."""
    texts = (ref.series_description or "", ref.protocol_name or "")
    if any(_matches(t, exclude) for t in texts):
        return False
    return any(_matches(t, include) for t in texts)


def _study_day(ref: SeriesRef) -> dt.date | None:
    try:
        return dt.datetime.strptime(ref.study_date[:8], "%Y%m%d").date()
    except ValueError:
        return None


def select_lge_series(
    refs: Sequence[SeriesRef],
    *,
    include: Sequence[str],
    exclude: Sequence[str],
    as_of: dt.date | None = None,
    max_age_days: int = 0,
) -> SeriesRef | None:
    """The LGE series to use, or None.

    Args:
        refs: the patient's series.
        include: patterns that mark a series as LGE.
        exclude: patterns that disqualify a series (localizer, cine, ...).
        as_of: studies after this day are ignored (None: no limit).
        max_age_days: when > 0, studies older than this many days before ``as_of`` are
            ignored.
    """
    candidates = []
    for ref in refs:
        if not is_lge(ref, include, exclude):
            continue
        day = _study_day(ref)
        if as_of is not None and day is not None:
            if day > as_of:
                continue
            if max_age_days > 0 and (as_of - day).days > max_age_days:
                continue
        candidates.append(ref)
    if not candidates:
        return None
    return max(
        candidates,
        key=lambda r: (_study_day(r) or dt.date.min, r.n_instances, r.series_instance_uid),
    )


def slice_position(ds: Dataset, normal: np.ndarray) -> float | None:
    """Position of one slice along ``normal`` (mm), or None without IPP."""
    ipp = ds.get("ImagePositionPatient")
    if ipp is None or len(ipp) != 3:
        return None
    return float(np.dot(np.asarray([float(v) for v in ipp]), normal))


def slice_normal(ds: Dataset) -> np.ndarray | None:
    """Unit normal of the slice plane from ImageOrientationPatient, or None."""
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    v = np.asarray([float(x) for x in iop])
    n = np.cross(v[:3], v[3:])
    norm = float(np.linalg.norm(n))
    return n / norm if norm > 1e-6 else None


def order_slices(datasets: Sequence[Dataset]) -> tuple[list[Dataset], str]:
    """Datasets in spatial order and the method used ("position" or "instance_number").

    Raises:
        DicomInvalid: neither positions nor instance numbers are available (names the
            series UID).
    """
    if not datasets:
        return [], "position"
    normal = slice_normal(datasets[0])
    if normal is not None:
        keyed = []
        for ds in datasets:
            pos = slice_position(ds, normal)
            if pos is None:
                break
            keyed.append((pos, int(ds.get("InstanceNumber", 0) or 0), str(ds.SOPInstanceUID), ds))
        else:
            keyed.sort(key=lambda k: k[:3])
            return [k[3] for k in keyed], "position"
    numbers = [ds.get("InstanceNumber") for ds in datasets]
    if any(n is None for n in numbers):
        uid = datasets[0].get("SeriesInstanceUID", "?")
        raise DicomInvalid(
            f"series {uid}: slices have neither ImagePositionPatient/ImageOrientationPatient "
            "nor InstanceNumber; cannot order them"
        )
    order = sorted(range(len(datasets)), key=lambda i: (int(numbers[i]), i))
    return [datasets[i] for i in order], "instance_number"
