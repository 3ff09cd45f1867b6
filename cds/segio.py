"""Segmentation masks on disk: DICOM SEG (highdicom) and NIfTI (nibabel).

Labels follow :class:`model.types.ImageFeatures`: 0 background, 1 myocardium, 2 enhancement
(scar or fibrosis; enhancement is myocardium too).

**DICOM SEG** (BINARY): segment 1 is the left-ventricular myocardium, enhancement included
(SNOMED CT 49848007 "Left Ventricle Myocardium"); segment 2 the enhancement (112674009
"Fibrosis").  On reading, segments are recognised by that property type, by 12402003
"Scar", or by their label (``myocard``; ``scar``, ``fibros``, ``enhanc``, ``infarct``,
``lge``), so contours exported by other reading software are understood; other segments
(blood pool, right ventricle) are ignored.  The SEG names its series in
ReferencedSeriesSequence and each frame's source instance, so it is matched to the series
and to its slices by UID; slices the SEG does not reference count as not annotated.

**NIfTI**: one integer label volume per series, array axes (column, row, slice) with the
slices in the series' spatial order (:func:`connectors.pacs.series.order_slices`), and an
affine from the DICOM geometry (LPS turned into NIfTI's RAS).  A NIfTI file carries no
UIDs: it is matched to its series by file name (see :mod:`cds.site_masks`) and must have
exactly the series' columns, rows and slice count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import Dataset

from cds.errors import MaskFileError
from model.image_branch import ENHANCEMENT, MYOCARDIUM

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_MYO_CODE, _FIBROSIS_CODE, _SCAR_CODE = "49848007", "112674009", "12402003"
_ENH_WORDS = ("scar", "fibros", "enhanc", "infarct", "lge")


@dataclass(frozen=True)
class SeriesGeometry:
    """What a mask must match.

    Args:
        series_instance_uid: the series.
        rows, cols: the slices' matrix.
        sop_instance_uids: the slices in spatial order.
    """

    series_instance_uid: str
    rows: int
    cols: int
    sop_instance_uids: tuple[str, ...]

    @classmethod
    def of(cls, ordered: Sequence[Dataset]) -> SeriesGeometry:
        """The geometry of a series whose datasets are in spatial order."""
        first = ordered[0]
        return cls(
            series_instance_uid=str(first.get("SeriesInstanceUID", "")),
            rows=int(first.Rows),
            cols=int(first.Columns),
            sop_instance_uids=tuple(str(ds.SOPInstanceUID) for ds in ordered),
        )


@dataclass(frozen=True)
class SeriesMask:
    """Expert labels of one series.

    Args:
        series_instance_uid: the series.
        labels: (S, rows, cols) uint8 in the series' slice order.
        annotated: (S,) bool, the slices the file labels (all, for NIfTI).
        path: the file.
    """

    series_instance_uid: str
    labels: np.ndarray
    annotated: np.ndarray
    path: Path


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    """The file name without ``.nii`` / ``.nii.gz``."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def seg_series_uid(path: Path) -> str:
    """The SeriesInstanceUID a DICOM SEG file references (ReferencedSeriesSequence).

    Raises:
        MaskFileError: not a readable SEG, or it references no single series.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise MaskFileError(f"{path.name}: not a readable DICOM file ({exc})") from None
    if str(ds.get("Modality", "")) != "SEG":
        raise MaskFileError(f"{path.name}: not a DICOM SEG (Modality {ds.get('Modality')!r})")
    refs = {str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", [])}
    if len(refs) != 1:
        raise MaskFileError(
            f"{path.name}: references {len(refs)} series in ReferencedSeriesSequence; need one"
        )
    return refs.pop()


def _segment_role(desc: Dataset) -> str | None:
    codes = {str(item.CodeValue) for item in desc.get("SegmentedPropertyTypeCodeSequence", [])}
    label = str(desc.get("SegmentLabel", "")).lower()
    if codes & {_FIBROSIS_CODE, _SCAR_CODE} or any(w in label for w in _ENH_WORDS):
        return "enhancement"
    if _MYO_CODE in codes or "myocard" in label:
        return "myocardium"
    return None


def read_seg(path: Path, geometry: SeriesGeometry) -> SeriesMask:
    """The labels of a DICOM SEG for the series it references.

    Raises:
        MaskFileError: unreadable, no myocardium segment, a matrix other than the series',
            or a referenced instance that is not in the series (the UID is named).
    """
    import highdicom as hd

    try:
        seg = hd.seg.segread(path)
    except (ValueError, AttributeError, KeyError, OSError) as exc:
        raise MaskFileError(f"{path.name}: cannot read the DICOM SEG ({exc})") from None
    name = path.name
    if (int(seg.Rows), int(seg.Columns)) != (geometry.rows, geometry.cols):
        raise MaskFileError(
            f"{name}: matrix {seg.Rows}x{seg.Columns} differs from series "
            f"{geometry.series_instance_uid} ({geometry.rows}x{geometry.cols})"
        )
    referenced = {uid for _st, _se, uid in seg.get_source_image_uids()}
    index = {u: k for k, u in enumerate(geometry.sop_instance_uids)}
    stranger = sorted(referenced - set(index))
    if stranger:
        raise MaskFileError(
            f"{name}: references instance {stranger[0]}, which is not a slice of series "
            f"{geometry.series_instance_uid} ({len(stranger)} such instance(s))"
        )
    roles: dict[str, list[int]] = {"myocardium": [], "enhancement": []}
    for desc in seg.SegmentSequence:
        role = _segment_role(desc)
        if role is not None:
            roles[role].append(int(desc.SegmentNumber))
    if not roles["myocardium"]:
        raise MaskFileError(f"{name}: no left-ventricular myocardium segment")
    uids = [u for u in geometry.sop_instance_uids if u in referenced]
    numbers = roles["myocardium"] + roles["enhancement"]
    try:
        pix = seg.get_pixels_by_source_instance(
            uids, segment_numbers=numbers, assert_missing_frames_are_empty=True
        )  # (n, rows, cols, len(numbers))
    except (ValueError, KeyError, RuntimeError) as exc:
        raise MaskFileError(f"{name}: cannot map frames to the series' slices ({exc})") from None
    n_myo = len(roles["myocardium"])
    myo = pix[..., :n_myo].any(-1)
    enh = pix[..., n_myo:].any(-1)
    labels = np.zeros((len(geometry.sop_instance_uids), geometry.rows, geometry.cols), np.uint8)
    rows = [index[u] for u in uids]
    labels[rows] = np.where(enh, ENHANCEMENT, np.where(myo, MYOCARDIUM, 0)).astype(np.uint8)
    annotated = np.zeros(len(labels), dtype=bool)
    annotated[rows] = True
    return SeriesMask(geometry.series_instance_uid, labels, annotated, path)


def read_nifti(path: Path, geometry: SeriesGeometry) -> SeriesMask:
    """The labels of a NIfTI volume (axes column, row, slice) matched to ``geometry``.

    Raises:
        MaskFileError: unreadable, a shape other than (cols, rows, slices) of the series,
            or label values other than 0, 1, 2.
    """
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)  # type: ignore[attr-defined]
    except (OSError, ValueError, EOFError, nib.filebasedimages.ImageFileError) as exc:
        raise MaskFileError(f"{path.name}: cannot read the NIfTI file ({exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    want = (geometry.cols, geometry.rows, len(geometry.sop_instance_uids))
    if data.shape != want:
        raise MaskFileError(
            f"{path.name}: shape {tuple(data.shape)} does not match series "
            f"{geometry.series_instance_uid} (columns, rows, slices) {want}"
        )
    if not np.isfinite(data).all() or not np.isin(data, (0, MYOCARDIUM, ENHANCEMENT)).all():
        raise MaskFileError(f"{path.name}: labels must be 0, 1 (myocardium) or 2 (enhancement)")
    labels = np.ascontiguousarray(np.transpose(data, (2, 1, 0)), dtype=np.uint8)
    annotated = np.ones(len(labels), dtype=bool)
    return SeriesMask(geometry.series_instance_uid, labels, annotated, path)


def nifti_affine(ordered: Sequence[Dataset]) -> np.ndarray:
    """The voxel-to-RAS affine of a series in spatial order (identity-like without
    ImagePositionPatient / ImageOrientationPatient / PixelSpacing)."""
    first = ordered[0]
    try:
        iop = np.asarray([float(v) for v in first.ImageOrientationPatient])
        row_mm, col_mm = (float(v) for v in first.PixelSpacing)
        origin = np.asarray([float(v) for v in first.ImagePositionPatient])
    except (AttributeError, TypeError, ValueError):
        return np.eye(4)
    normal = np.cross(iop[:3], iop[3:])
    if len(ordered) > 1:
        try:
            last = np.asarray([float(v) for v in ordered[-1].ImagePositionPatient])
            step = (last - origin) / (len(ordered) - 1)
        except (AttributeError, TypeError, ValueError):
            step = normal * float(first.get("SpacingBetweenSlices", 1.0) or 1.0)
    else:
        step = normal * float(first.get("SliceThickness", 1.0) or 1.0)
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * col_mm  # along a row: the column index
    lps[:3, 1] = iop[3:] * row_mm  # down a column: the row index
    lps[:3, 2] = step
    lps[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def write_nifti(labels: np.ndarray, path: Path, affine: np.ndarray) -> Path:
    """Write (S, rows, cols) labels as a NIfTI volume (axes column, row, slice)."""
    import nibabel as nib

    data = np.ascontiguousarray(np.transpose(np.asarray(labels, dtype=np.uint8), (2, 1, 0)))
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return path


def write_seg(
    ordered: Sequence[Dataset],
    labels: np.ndarray,
    path: Path,
    *,
    algorithm: str | None = None,
    version: str = "1",
) -> Path:
    """Write (S, rows, cols) labels of a series (datasets in slice order) as a BINARY DICOM
    SEG with the two segments of the module docstring.

    Args:
        ordered: the source images (single-frame), in the order of ``labels``.
        labels: 0/1/2 labels on the source images' matrix.
        path: the output file.
        algorithm: the segmenting algorithm's name (automatic segments), or None for
            manual (expert) segments.
        version: the algorithm's version.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    labels = np.asarray(labels)
    if labels.shape != (len(ordered), int(ordered[0].Rows), int(ordered[0].Columns)):
        raise ValueError(f"labels {labels.shape} do not fit {len(ordered)} source slices")
    kind = (
        hd.seg.SegmentAlgorithmTypeValues.MANUAL
        if algorithm is None
        else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    )
    ident = (
        None
        if algorithm is None
        else hd.AlgorithmIdentificationSequence(
            name=algorithm, version=version, family=codes.cid7162.ArtificialIntelligence
        )
    )

    def segment(number: int, label: str, category: Code, prop: Code) -> hd.seg.SegmentDescription:
        return hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=category,
            segmented_property_type=prop,
            algorithm_type=kind,
            algorithm_identification=ident,
        )

    descriptions = [
        segment(
            1, "LV myocardium", codes.SCT.AnatomicalStructure, codes.SCT.LeftVentricleMyocardium
        ),
        segment(2, "Enhancement", codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Fibrosis),
    ]
    pixels = np.stack([labels >= MYOCARDIUM, labels == ENHANCEMENT], axis=-1).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=list(ordered),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=9000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="M-PRTM CDS",
        manufacturer_model_name=algorithm or "expert contours",
        software_versions=version,
        device_serial_number="0",
        omit_empty_frames=True,
    )
    seg.save_as(path)
    return path


def labels_fingerprint(masks: Sequence[SeriesMask]) -> str:
    """sha256 over each series' UID, annotated slices and labels (sorted by UID)."""
    h = hashlib.sha256()
    for m in sorted(masks, key=lambda m: m.series_instance_uid):
        h.update(m.series_instance_uid.encode() + b"\x00")
        h.update(np.packbits(m.annotated).tobytes())
        h.update(repr(m.labels.shape).encode())
        h.update(hashlib.sha256(np.ascontiguousarray(m.labels, np.uint8).tobytes()).digest())
    return h.hexdigest()
