"""Which series is the LGE series, and in which order its slices go.

Selection classifies every series the query returned (:mod:`connectors.pacs.recognition`:
DICOM attributes first, names as the tie-breaker, site patterns ``pacs.lge_patterns`` /
``pacs.exclude_patterns`` as overrides).  Among the LGE series the most recent study
(StudyDate, not after the as-of date) wins; a magnitude reconstruction is dropped for its
phase-sensitive twin (configurable); then the strongest evidence, the most instances and
the highest SeriesInstanceUID (deterministic).

Slices are ordered by their position along the slice normal: the dot product of
ImagePositionPatient with the cross product of the row and column direction cosines of
ImageOrientationPatient.  When a slice lacks either attribute the series falls back to
InstanceNumber.

:func:`not_lge_reason` reads the acquisition attributes of a retrieved series (frames of
Enhanced MR objects included) and names positive evidence that it is not LGE.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
from pydicom import Dataset

from connectors.errors import DicomInvalid
from connectors.pacs._frames import FrameAttrs, iter_frames
from connectors.pacs.base import SeriesRef
from connectors.pacs.pixels import expand_frames
from connectors.pacs.recognition import LGE, LGE_PSIR, SeriesClass, classify_series, normalise_name


def is_lge(ref: SeriesRef, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """True when :func:`recognition.classify_series` finds an LGE series."""
    return classify_series(ref, include=include, exclude=exclude).is_lge


def _study_day(ref: SeriesRef) -> dt.date | None:
    try:
        return dt.datetime.strptime(ref.study_date[:8], "%Y%m%d").date()
    except ValueError:
        return None


def _twin_key(ref: SeriesRef) -> str:
    """The name of a reconstruction with the PSIR/MAG/PHASE words taken out."""
    words = normalise_name(ref.series_description).split()
    kept = [w for w in words if w not in _RECON_WORDS]
    return " ".join(kept)


_RECON_WORDS = frozenset({"PSIR", "MAG", "MAGN", "MAGNITUDE", "PHASE", "P", "M", "R", "REAL"})


def are_twins(a: SeriesRef, b: SeriesRef) -> bool:
    """True when ``a`` and ``b`` look like two reconstructions of one acquisition.

    Same study, and the same instance count, and one of: the same (non-empty)
    ProtocolName, the same SeriesDescription once the PSIR/MAG/PHASE words are taken out,
    or SeriesNumbers at most two apart.
    """
    if a.study_instance_uid != b.study_instance_uid or a.n_instances != b.n_instances:
        return False
    if a.protocol_name and a.protocol_name == b.protocol_name:
        return True
    if _twin_key(a) and _twin_key(a) == _twin_key(b):
        return True
    if a.series_number is not None and b.series_number is not None:
        return abs(a.series_number - b.series_number) <= 2
    return False


def select_lge_series(
    refs: Sequence[SeriesRef],
    *,
    include: Sequence[str],
    exclude: Sequence[str],
    as_of: dt.date | None = None,
    max_age_days: int = 0,
    prefer_phase_sensitive: bool = True,
) -> SeriesRef | None:
    """The LGE series to use, or None.

    Each series is classified by :func:`recognition.classify_series`.  Among the LGE
    series the most recent study (StudyDate, not after ``as_of``) wins; a reconstruction
    whose twin (:func:`are_twins`) of the preferred kind is also found is dropped; then the
    strongest evidence, the most instances, the preferred reconstruction and the highest
    SeriesInstanceUID decide.

    Args:
        refs: the patient's series.
        include: site patterns that make a series LGE unless its attributes rule it out.
        exclude: site patterns that rule a series out (localizer, cine, ...).
        as_of: studies after this day are ignored (None: no limit).
        max_age_days: when > 0, studies older than this many days before ``as_of`` are
            ignored.
        prefer_phase_sensitive: between a phase-sensitive (PSIR) reconstruction and its
            magnitude twin, take the PSIR (False: the magnitude).
    """
    candidates: list[tuple[SeriesRef, SeriesClass]] = []
    for ref in refs:
        cls = classify_series(ref, include=include, exclude=exclude)
        if not cls.is_lge:
            continue
        day = _study_day(ref)
        if as_of is not None and day is not None:
            if day > as_of:
                continue
            if max_age_days > 0 and (as_of - day).days > max_age_days:
                continue
        candidates.append((ref, cls))
    if not candidates:
        return None
    preferred = LGE_PSIR if prefer_phase_sensitive else LGE
    kept = [
        (ref, cls)
        for ref, cls in candidates
        if cls.kind == preferred
        or not any(c.kind == preferred and are_twins(ref, r) for r, c in candidates)
    ]
    best = max(
        kept,
        key=lambda rc: (
            _study_day(rc[0]) or dt.date.min,
            rc[1].evidence,
            rc[0].n_instances,
            rc[1].kind == preferred,
            rc[0].series_instance_uid,
        ),
    )
    return best[0]


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
    """Slices in spatial order and the method used ("position" or "instance_number").

    A multi-frame (Enhanced or Legacy Converted Enhanced MR) instance contributes one
    slice per frame (see :func:`pixels.expand_frames`), placed by the frame's Plane
    Position and Plane Orientation; frames without them fall back to frame order.

    Raises:
        DicomInvalid: neither positions nor instance numbers are available (names the
            series UID), or a multi-frame instance cannot be decoded.
    """
    if not datasets:
        return [], "position"
    datasets = expand_frames(datasets)
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


#: BodyPartExamined values (PS3.16 Annex L defined terms and common scanner spellings) of
#: regions that cannot hold the heart.  CHEST, THORAX, HEART, ABDOMEN, WHOLEBODY and the
#: spines next to the heart are deliberately absent: a cardiac study may be filed under
#: them, so they are never a reason.
NON_CARDIAC_BODY_PARTS = frozenset(
    {
        "HEAD", "BRAIN", "SKULL", "ORBIT", "SELLA", "IAC", "TMJ", "JAW", "FACE", "NECK",
        "CSPINE", "LSPINE", "SSPINE", "COCCYX", "SACRUM", "PELVIS", "HIP", "PROSTATE",
        "UTERUS", "BLADDER", "KNEE", "ANKLE", "FOOT", "TOE", "HAND", "FINGER", "WRIST",
        "ELBOW", "FOREARM", "ARM", "LEG", "THIGH", "FEMUR", "EXTREMITY", "LOWER LIMB",
        "UPPER LIMB", "BREAST", "LIVER", "KIDNEY", "PANCREAS",
    }
)  # fmt: skip

#: LGE is T1-weighted: an inversion-recovery gradient-echo or SSFP readout with an echo
#: time of a few ms.  A shortest echo time this long shows T2 (or spin-echo) contrast.
LONG_ECHO_TIME_MS = 30.0
#: A cine series has one image per cardiac phase at each slice position, spread over the
#: R-R interval; this many distinct trigger times spanning at least CINE_MIN_SPAN_MS at one
#: position is taken as cine (repeated single-shot LGE keeps one trigger time).
CINE_MIN_PHASES = 10
CINE_MIN_SPAN_MS = 300.0
#: This many distinct inversion times at one slice position is an inversion-time scout.
TI_SCOUT_MIN_TIMES = 5


def _position_key(frame: FrameAttrs) -> tuple[float, ...] | None:
    if frame.position is None:
        return None
    orientation = frame.orientation or ()
    return tuple(round(v, 1) for v in frame.position) + tuple(round(v, 3) for v in orientation)


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value - round(value)) < 0.05 else f"{value:.1f}"


def not_lge_reason(datasets: Sequence[Dataset]) -> str | None:
    """A short reason (no PHI) when the attributes positively show a non-LGE series.

    Returns None when the series is, or may be, late gadolinium enhancement: an absent
    attribute is never a reason, and only evidence that no LGE acquisition from any vendor
    shows counts (another modality, a body region without the heart, a localizer, a
    diffusion weighting, a long echo time, several cardiac phases or inversion times per
    slice position).  Enhanced and Legacy Converted Enhanced MR frames are read through
    their functional groups.

    Args:
        datasets: the instances of one retrieved series (pixel data not needed).
    """
    if not datasets:
        return None
    first = datasets[0]
    modality = str(first.get("Modality", "") or "").strip().upper()
    if modality and modality != "MR":
        return f"not MR (modality {modality})"
    body_part = str(first.get("BodyPartExamined", "") or "").strip().upper()
    if body_part in NON_CARDIAC_BODY_PARTS:
        return f"not a cardiac study (BodyPartExamined {body_part})"
    frames = list(iter_frames(list(datasets)))
    if any("LOCALIZER" in f.image_type for f in frames):
        return "localizer (ImageType LOCALIZER)"
    b_values = [f.b_value for f in frames if f.b_value is not None and f.b_value > 0]
    if b_values:
        return f"diffusion-weighted series (b-value up to {_fmt(max(b_values))} s/mm2)"
    echo_times = [f.echo_time for f in frames if f.echo_time is not None and f.echo_time > 0]
    if echo_times and min(echo_times) >= LONG_ECHO_TIME_MS:
        has_ir = any(f.inversion_time for f in frames)
        tail = "" if has_ir else ", no inversion recovery"
        return f"T2-weighted acquisition (EchoTime {_fmt(min(echo_times))} ms{tail})"
    triggers: dict[tuple[float, ...], set[float]] = {}
    inversions: dict[tuple[float, ...], set[float]] = {}
    for f in frames:
        key = _position_key(f)
        if key is None:
            continue
        if f.trigger_time is not None:
            triggers.setdefault(key, set()).add(round(f.trigger_time))
        if f.inversion_time is not None:
            inversions.setdefault(key, set()).add(round(f.inversion_time))
    n_ti = max((len(v) for v in inversions.values()), default=0)
    if n_ti >= TI_SCOUT_MIN_TIMES:
        return f"multiple inversion times ({n_ti} per slice position): TI scout or T1 mapping"
    phases = [v for v in triggers.values() if len(v) >= CINE_MIN_PHASES]
    if any(max(v) - min(v) >= CINE_MIN_SPAN_MS for v in phases):
        n = max(len(v) for v in phases)
        return f"cine series ({n} cardiac phases per slice position)"
    return None
