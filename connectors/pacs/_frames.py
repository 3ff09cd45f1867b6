"""Per-frame attributes of single-frame and multi-frame (Enhanced) MR objects.

A classic MR Image Storage instance is one frame whose attributes sit at the top level.
Enhanced MR and Legacy Converted Enhanced MR instances (PS3.3 C.7.6.16) hold many frames;
an attribute of frame ``i`` is found in the i-th item of the Per-Frame Functional Groups
Sequence, else in the Shared Functional Groups Sequence, each inside one functional-group
macro sequence (Plane Position Sequence, MR Echo Sequence, Cardiac Synchronization
Sequence, the Unassigned Per-Frame/Shared Converted Attributes Sequences of legacy
conversions, ...), else at the top level of the dataset.  :func:`frame_value` looks in
that order, so one reader serves all three storage classes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian


def n_frames(ds: Dataset) -> int:
    """Number of frames of ``ds`` (1 for a classic single-frame image)."""
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def is_multiframe(ds: Dataset) -> bool:
    """True for an instance organised in functional groups (Enhanced/Legacy Converted)."""
    return "PerFrameFunctionalGroupsSequence" in ds or n_frames(ds) > 1


def _in_group(item: Dataset, keyword: str) -> Any:
    """``keyword`` in one functional-group item: directly, or in one of its macros."""
    if keyword in item:
        return item.get(keyword)
    for elem in item:
        if elem.VR == "SQ" and isinstance(elem.value, DicomSequence) and len(elem.value) > 0:
            inner = elem.value[0]
            if keyword in inner:
                return inner.get(keyword)
    return None


def frame_value(ds: Dataset, index: int, *keywords: str) -> Any:
    """The first of ``keywords`` present for frame ``index`` (0-based), or None.

    Per-frame groups win over shared groups, which win over the top level.
    """
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    for keyword in keywords:
        if per_frame is not None and index < len(per_frame):
            value = _in_group(per_frame[index], keyword)
            if value is not None:
                return value
        if shared is not None and len(shared) > 0:
            value = _in_group(shared[0], keyword)
            if value is not None:
                return value
        value = ds.get(keyword)
        if value is not None and value != "":
            return value
    return None


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _float(value: Any) -> float | None:
    """A number from a DS/IS/FD value; the first one of a multi-valued element."""
    if value is None or value == "":
        return None
    if not isinstance(value, (str, bytes, int, float)):
        try:
            value = next(iter(value))
        except (TypeError, StopIteration):
            return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value.strip().upper(),) if value.strip() else ()
    try:
        return tuple(str(v).strip().upper() for v in value if str(v).strip())
    except TypeError:
        return (str(value).strip().upper(),)


@dataclass(frozen=True)
class FrameAttrs:
    """The attributes of one frame that recognition and slice ordering use.

    Args:
        position: ImagePositionPatient (mm), or None.
        orientation: ImageOrientationPatient (six direction cosines), or None.
        trigger_time: ms after the R wave (TriggerTime, NominalCardiacTriggerDelayTime).
        echo_time: ms (EchoTime, EffectiveEchoTime).
        inversion_time: ms (InversionTime, InversionTimes), or None.
        image_type: ImageType values of the instance and FrameType values of the frame.
        b_value: DiffusionBValue (s/mm2), or None.
        pixel_spacing: PixelSpacing (row, column) in mm, or None.
    """

    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    trigger_time: float | None
    echo_time: float | None
    inversion_time: float | None
    image_type: tuple[str, ...]
    b_value: float | None
    pixel_spacing: tuple[float, ...] | None


def frame_attrs(ds: Dataset, index: int) -> FrameAttrs:
    """Attributes of frame ``index`` of ``ds`` (0 for a single-frame image)."""
    image_type = _strings(ds.get("ImageType")) + _strings(
        frame_value(ds, index, "FrameType") if is_multiframe(ds) else None
    )
    return FrameAttrs(
        position=_floats(frame_value(ds, index, "ImagePositionPatient"), 3),
        orientation=_floats(frame_value(ds, index, "ImageOrientationPatient"), 6),
        trigger_time=_float(
            frame_value(ds, index, "NominalCardiacTriggerDelayTime", "TriggerTime")
        ),
        echo_time=_float(frame_value(ds, index, "EffectiveEchoTime", "EchoTime")),
        inversion_time=_float(frame_value(ds, index, "InversionTimes", "InversionTime")),
        image_type=image_type,
        b_value=_float(frame_value(ds, index, "DiffusionBValue")),
        pixel_spacing=_floats(frame_value(ds, index, "PixelSpacing"), 2),
    )


def iter_frames(datasets: list[Dataset] | tuple[Dataset, ...]) -> Iterator[FrameAttrs]:
    """Attributes of every frame of every dataset, in storage order."""
    for ds in datasets:
        for i in range(n_frames(ds)):
            yield frame_attrs(ds, i)


#: Top-level attributes every frame keeps from its multi-frame instance.
_COMMON = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
)
#: Attributes of one frame, looked up through the functional groups.
_PER_FRAME = (
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "RescaleSlope",
    "RescaleIntercept",
)


def split_frames(ds: Dataset, pixels: Any) -> list[Dataset]:
    """One single-frame Dataset per frame of a multi-frame instance.

    Each carries the instance's identity and image-pixel attributes, the frame's plane
    position, orientation, pixel spacing and rescale from the functional groups,
    ``InstanceNumber`` = frame number (1-based, the order of the frames in the object)
    and the frame's decoded pixels as uncompressed (Explicit VR Little Endian) PixelData.

    Args:
        ds: an Enhanced or Legacy Converted Enhanced instance.
        pixels: its decoded pixel array, (frames, rows, columns).
    """
    out: list[Dataset] = []
    for i in range(pixels.shape[0]):
        frame = Dataset()
        frame.file_meta = FileMetaDataset()
        frame.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        for keyword in _COMMON:
            if keyword in ds:
                setattr(frame, keyword, ds.get(keyword))
        for keyword in _PER_FRAME:
            value = frame_value(ds, i, keyword)
            if value is not None:
                setattr(frame, keyword, value)
        frame.InstanceNumber = i + 1
        frame.NumberOfFrames = 1
        frame.PixelData = pixels[i].tobytes()
        out.append(frame)
    return out
