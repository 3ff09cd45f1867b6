"""What kind of series a query result is: LGE (phase-sensitive or magnitude) or another.

Only what a series-level C-FIND, QIDO-RS search or folder scan returns is used (see
:class:`SeriesRef`): ImageType, ScanningSequence, SequenceVariant, InversionTime,
ContrastBolusAgent/Route, SequenceName, Manufacturer, the number of instances, and the
SeriesDescription/ProtocolName.

The attributes decide first.  ImageType LOCALIZER, a parametric map (T1 MAP, T2 MAP, ...),
PERFUSION or a velocity map, a Siemens velocity-encoded sequence name, or a scanning
sequence of spin echoes without gradient echo (STIR, TSE, HASTE) rule a series out
whatever its name; so do an echo-planar readout without inversion (ScanningSequence EP:
diffusion or fMRI) and a steady-state gradient echo without magnetization preparation or
inversion (ScanningSequence GR, SequenceVariant SS without MP: a cine).  Inversion
recovery (ScanningSequence IR, an InversionTime, an IR ImageType such as Philips
``M_IR``/``R_IR``) with a gradient-echo readout, more so after contrast, is the
LGE signature.  What the attributes cannot tell apart (an LGE series, a TI scout, a MOLLI
series and a cine are all gradient echo; a TI scout and MOLLI also invert), the names
decide: vendor and site vocabulary for each kind, in a fixed order of precedence.  Names
are the whole evidence when a PACS returns no attributes.

Between the phase-sensitive reconstruction of an LGE acquisition and its magnitude
reconstruction, ImageType decides (``PSIR``, Philips ``R_IR``, ``REAL``/``R`` for the
phase-sensitive image; ``M_IR``, ``MAGNITUDE``, ``M`` for the magnitude), then the name
(``PSIR`` without ``MAG``).

Site patterns (``pacs.lge_patterns`` / ``pacs.exclude_patterns``, case-insensitive
substrings of SeriesDescription or ProtocolName) override the vocabulary: an exclude
pattern always rules a series out; an include pattern makes it LGE unless an attribute
rules it out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from connectors.pacs.base import SeriesRef

#: Kinds a series can be classified as.
LGE_PSIR = "lge_psir"  # LGE, phase-sensitive (PSIR) reconstruction
LGE = "lge"  # LGE, magnitude reconstruction (conventional IR, or the twin of a PSIR)
KINDS = (
    LGE_PSIR,
    LGE,
    "cine",
    "ti_scout",
    "t1_map",
    "t2_map",
    "t2_weighted",
    "localizer",
    "perfusion",
    "flow",
    "excluded",
    "other",
)

# Name vocabulary: regular expressions over the normalised name (upper case, every run of
# other characters a single space, "2D"/"3D" prefixes split off), in order of precedence.
_NAME_RULES: tuple[tuple[str, str], ...] = (
    ("ti_scout", r"\bTI ?SCOUT|\bLOOK ?LOCKER\b|\bTI ?FIND|\bCINE ?IR\b"),
    ("localizer", r"\bLOCALI[SZ]ER|\bLOC\b|\bSURVEY\b|\bSCOUT\b|\bTRI ?PILOT\b|\b3 ?PLANE\b"),
    # inversion-prepared 3D T1 of the brain: the LGE attribute signature (GR/RM + IR + MP)
    ("other", r"\b(ME)?MP ?2?RAGE\b"),
    ("t1_map", r"\b(SH)?MOLLI|\bSASHA\b|\bT1 ?MAP|\bNATIVE T1\b|\bECV\b"),
    ("t2_map", r"\bT2 ?(STAR |\* ?)?MAP|\bT2 ?(STAR\b|\*)"),
    ("perfusion", r"\bPERF|\bFIRST ?PASS\b"),
    ("flow", r"\bFLOW\b|\bQ ?FLOW\b|\bVENC\b|\bPC\b|\bPHASE ?CONTRAST\b"),
    ("t2_weighted", r"\bSTIR\b|\bTIRM\b|\bT2W?\b|\bHASTE\b|\bTSE\b|\bFSE\b|\bBLACK ?BLOOD\b"),
    (
        LGE,
        r"\bLGE\b|\bPSIR|\bMDE\b|\bDE\b|\bDEL(AYED)? ?ENH|\bLATE ?(GAD|ENH)|\bVIAB"
        r"|\bHYPER ?ENH|\bSCAR\b|\bDELAYED\b",
    ),
    ("cine", r"\bCINE|\bFUNCTION\b"),
)
_NAME_PSIR = re.compile(r"\bPSIR|\bPHASE ?SENS")
_NAME_MAG = re.compile(r"\bMAG(NITUDE)?\b|\bMAGN\b")

# ImageType values (upper case) of each meaning.
_IT_LOCALIZER = {"LOCALIZER"}
_IT_MAPS = {
    "T1 MAP": "t1_map",
    "T1MAP": "t1_map",
    "T1_MAP": "t1_map",
    "T2 MAP": "t2_map",
    "T2MAP": "t2_map",
    "T2_MAP": "t2_map",
    "T2* MAP": "t2_map",
    "T2STAR MAP": "t2_map",
    "PERFUSION": "perfusion",
    "VELOCITY MAP": "flow",
    "VELOCITY": "flow",
}
_IT_PHASE_SENSITIVE = {"PSIR", "R_IR", "REAL", "R"}
_IT_MAGNITUDE = {"M_IR", "MAGNITUDE", "M"}
_IT_IR = {"IR", "M_IR", "R_IR", "PSIR"}
#: Siemens sequence names of velocity-encoded (flow) acquisitions, e.g. "*fl2d1_v150in".
_SEQ_VELOCITY = re.compile(r"_V\d+", re.IGNORECASE)


@dataclass(frozen=True)
class SeriesClass:
    """The kind of one series and the evidence for it.

    Attributes:
        kind: one of :data:`KINDS`.
        evidence: for LGE kinds, how strongly: 3 = a name and inversion-recovery
            attributes agree, 2 = a name (or a site include pattern) alone, 1 = inversion
            recovery attributes alone; 0 otherwise.
        reason: a short explanation without PHI (names of attributes and their values).
    """

    kind: str
    evidence: int
    reason: str

    @property
    def is_lge(self) -> bool:
        return self.kind in (LGE, LGE_PSIR)


def normalise_name(text: str) -> str:
    """Upper case, runs of non-alphanumerics as one space, "2D"/"3D" prefixes split off."""
    up = re.sub(r"[^A-Z0-9*]+", " ", text.upper())
    up = re.sub(r"\b([23]D)(?=[A-Z])", r"\1 ", up)
    return f" {up.strip()} "


def _tokens(multi: str) -> list[str]:
    return [t.strip().upper() for t in multi.split("\\") if t.strip()]


def _matches(text: str, patterns: Sequence[str]) -> bool:
    low = text.lower()
    return any(p.lower() in low for p in patterns if p)


def name_kind(*names: str) -> str | None:
    """The kind the names suggest (first rule of :data:`_NAME_RULES` that matches)."""
    text = " ".join(normalise_name(n) for n in names if n)
    for kind, pattern in _NAME_RULES:
        if re.search(pattern, text):
            return kind
    return None


def _attribute_kind(ref: SeriesRef, image_type: list[str]) -> tuple[str, str] | None:
    """A kind the attributes alone establish as not LGE, with its reason."""
    if _IT_LOCALIZER & set(image_type):
        return "localizer", "ImageType LOCALIZER"
    for value in image_type:
        if value in _IT_MAPS:
            return _IT_MAPS[value], f"ImageType {value}"
    if _SEQ_VELOCITY.search(ref.sequence_name):
        return "flow", f"velocity-encoded SequenceName {ref.sequence_name}"
    scanning = set(_tokens(ref.scanning_sequence))
    if "EP" in scanning and not _inversion_recovery(ref, image_type):
        return "other", f"echo-planar readout (ScanningSequence {ref.scanning_sequence})"
    if "SE" in scanning and "GR" not in scanning:
        return "t2_weighted", f"spin-echo readout (ScanningSequence {ref.scanning_sequence})"
    variant = set(_tokens(ref.sequence_variant))
    if (
        scanning == {"GR"}
        and "SS" in variant
        and "MP" not in variant
        and not _inversion_recovery(ref, image_type)
    ):
        return "cine", "steady-state gradient echo without preparation (SequenceVariant SS)"
    return None


def _inversion_recovery(ref: SeriesRef, image_type: list[str]) -> str | None:
    if "IR" in _tokens(ref.scanning_sequence):
        return "ScanningSequence IR"
    if ref.inversion_time_ms is not None and ref.inversion_time_ms > 0:
        return f"InversionTime {ref.inversion_time_ms:.0f} ms"
    hit = _IT_IR & set(image_type)
    if hit:
        return f"ImageType {sorted(hit)[0]}"
    return None


def _phase_sensitive(ref: SeriesRef, image_type: list[str]) -> bool:
    if _IT_PHASE_SENSITIVE & set(image_type):
        return True
    names = normalise_name(ref.series_description) + normalise_name(ref.protocol_name)
    if _IT_MAGNITUDE & set(image_type) or _NAME_MAG.search(names):
        return False
    return bool(_NAME_PSIR.search(names))


def classify_series(
    ref: SeriesRef, *, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> SeriesClass:
    """The kind of ``ref`` (see the module docstring for the rules).

    Args:
        ref: a series as a query returned it; empty attributes are unknown.
        include: site patterns that make a series LGE unless its attributes rule it out.
        exclude: site patterns that always rule a series out.
    """
    names = (ref.series_description or "", ref.protocol_name or "")
    if any(_matches(n, exclude) for n in names):
        return SeriesClass("excluded", 0, "name matches pacs.exclude_patterns")
    image_type = _tokens(ref.image_type)
    ruled_out = _attribute_kind(ref, image_type)
    if ruled_out is not None:
        return SeriesClass(ruled_out[0], 0, ruled_out[1])
    by_name = name_kind(*names)
    if by_name is None and any(_matches(n, include) for n in names):
        by_name = LGE
    ir = _inversion_recovery(ref, image_type)
    if by_name is not None and by_name != LGE:
        return SeriesClass(by_name, 0, f"name suggests {by_name}")
    if by_name is None and ir is None:
        return SeriesClass("other", 0, "neither LGE attributes nor an LGE name")
    contrast = ref.contrast_agent or ref.contrast_route
    evidence = 3 if by_name and ir else (2 if by_name else 1)
    parts = [p for p in (ir, "LGE name" if by_name else "", "contrast given" if contrast else "")]
    kind = LGE_PSIR if _phase_sensitive(ref, image_type) else LGE
    return SeriesClass(kind, evidence, ", ".join(p for p in parts if p))


def classify_description(
    description: str,
    *,
    modality: str = "",
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> SeriesClass:
    """The kind of a series known only by its description and modality.

    This is what a FHIR ImagingStudy series carries (``series.description`` and
    ``series.modality``): the same rules as :func:`classify_series` with every acquisition
    attribute unknown, so the names decide.  A modality other than MR is never LGE.

    Args:
        description: the series (or study) description; empty is unknown.
        modality: the DICOM modality code; empty is unknown.
        include: site patterns that make a series LGE (``pacs.lge_patterns``).
        exclude: site patterns that always rule a series out (``pacs.exclude_patterns``).
    """
    if modality and modality.upper() != "MR":
        return SeriesClass("other", 0, f"modality {modality}")
    ref = SeriesRef("", "", "", modality or "MR", description, "", "", 0)
    return classify_series(ref, include=include, exclude=exclude)
