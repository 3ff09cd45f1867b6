"""Imaging results as DICOM: a Segmentation and a TID 1500 measurement report per LGE series.

Built with :mod:`highdicom` from the image network's label map
(:class:`model.types.ImageFeatures`) and the series' source instances, in slice order:

* **SEG** (Segmentation Storage, BINARY): segment 1 *Myocardium* (SCT 74281007, the whole
  myocardium, enhanced part included, the burden's denominator) and segment 2
  *Fibrosis* (SCT 112674009, category *Morphologically Altered Structure*, the enhanced
  myocardium).  Each segment carries the algorithm identification: the model name, its
  version, family *Artificial Intelligence* (DCM 123110).  The label map is resampled
  from the model's grid back to each source slice's Rows x Columns by nearest neighbour
  on the grid of :func:`connectors.pacs.pixels.resample_slice` (pixel centres aligned,
  the padding to a square cropped away), and references only the slices the network
  segmented (:func:`model.image_branch.select_slices`).
* **SR** (Comprehensive 3D SR, TID 1500 *Imaging Measurement Report*): for each segment
  its area (mm2) and the volume of the segmented slices (mm3: area x SliceThickness);
  for the enhancement also the fibrosis burden in percent, the very value of the
  RiskAssessment (the model's enhanced / myocardial area on its own grid, so it may
  differ in the last digits from the ratio of the areas measured at source resolution).
  It references the SEG's segments and the source images.
* optional **secondary capture** (8-bit RGB, one instance per segmented slice): the
  slice with the masks drawn as on the inbox (:func:`cds.overlay.overlay_rgb`), for
  viewers without SEG support.

Every UID is derived from the source SeriesInstanceUID, the model version and the
object's role (:func:`result_uid`), so a re-run of the same series and model rebuilds
the same instances and a PACS that already holds them stores nothing new.

A series the image quality gate refused (``ImageFeatures.usable`` false) gets no result:
:func:`build_results` refuses it, so its segmentation never reaches a viewer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes

from cds.overlay import overlay_rgb
from connectors.pacs.pixels import resample_slice, slice_pixels
from model.image_branch import ENHANCEMENT, select_slices

MANUFACTURER = "M-PRTM CDS"
SEG_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902
SC_SERIES_NUMBER = 9903

MYOCARDIUM_CODE = hd.sr.CodedConcept("74281007", "SCT", "Myocardium structure")
FIBROSIS_CODE = codes.SCT.Fibrosis
ALTERED_STRUCTURE = hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure")
#: The fibrosis burden has no standard concept: it is coded in the product's own scheme.
BURDEN_CODE = hd.sr.CodedConcept("LGE-BURDEN", "99MPRTM", "Enhanced myocardial area fraction")


class ImagingResultsError(ValueError):
    """The results of a series cannot be built (unusable series, shapes that disagree,
    source instances without the geometry a SEG needs); names the series UID."""


@dataclass(frozen=True)
class ImagingResults:
    """The DICOM objects of one series' results.

    Args:
        seg: the Segmentation instance.
        sr: the TID 1500 measurement report.
        secondary_capture: overlay instances (empty unless asked for).
        source_masks: (S_kept, Rows, Columns) uint8 labels on the source geometry,
            the slices of ``source_uids`` (what the SEG encodes).
        source_uids: SOPInstanceUIDs of the segmented source slices.
    """

    seg: Dataset
    sr: Dataset
    secondary_capture: tuple[Dataset, ...]
    source_masks: np.ndarray
    source_uids: tuple[str, ...]

    def datasets(self) -> list[Dataset]:
        return [self.seg, self.sr, *self.secondary_capture]


def result_uid(series_instance_uid: str, model_version: str, role: str) -> str:
    """A UID determined by the source series, the model version and ``role``: ``2.25.``
    and the first 128 bits of a SHA-256 over them as a decimal integer (PS3.5 B.2
    UUID-derived form)."""
    digest = hashlib.sha256("\0".join((series_instance_uid, model_version, role)).encode())
    return f"2.25.{int.from_bytes(digest.digest()[:16], 'big')}"


def to_source_geometry(labels: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """A (size, size) label map on the model's grid -> (rows, columns) uint8.

    The model's image was the source slice padded to a centred square of side
    ``max(rows, columns)`` and resampled (:func:`resample_slice`); this resamples the
    labels to that square by nearest neighbour on the same aligned grid and crops the
    padding away.
    """
    if labels.ndim != 2 or labels.shape[0] != labels.shape[1]:
        raise ValueError(f"labels must be a square 2-D map, got {labels.shape}")
    n = max(rows, columns)
    square = resample_slice(labels, n, nearest=True)
    top, left = (n - rows) // 2, (n - columns) // 2
    return np.asarray(square[top : top + rows, left : left + columns], dtype=np.uint8)


def _algorithm(model_name: str, model_version: str) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=model_name, family=codes.cid7162.ArtificialIntelligence, version=model_version
    )


def _segments(
    model_name: str, model_version: str, series_uid: str
) -> list[hd.seg.SegmentDescription]:
    algo = _algorithm(model_name, model_version)
    return [
        hd.seg.SegmentDescription(
            segment_number=1,
            segment_label="Myocardium",
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=MYOCARDIUM_CODE,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
            tracking_id="myocardium",
            tracking_uid=result_uid(series_uid, model_version, "tracking-myocardium"),
        ),
        hd.seg.SegmentDescription(
            segment_number=2,
            segment_label="Enhancement",
            segmented_property_category=ALTERED_STRUCTURE,
            segmented_property_type=FIBROSIS_CODE,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
            tracking_id="enhancement",
            tracking_uid=result_uid(series_uid, model_version, "tracking-enhancement"),
        ),
    ]


def _pixel_area_mm2(ds: Dataset) -> float | None:
    try:
        row, col = (float(v) for v in ds.PixelSpacing)
    except (AttributeError, TypeError, ValueError):
        return None
    return row * col if row > 0 and col > 0 else None


def _thickness_mm(ds: Dataset) -> float | None:
    try:
        t = float(ds.SliceThickness)
    except (AttributeError, TypeError, ValueError):
        return None
    return t if t > 0 else None


def _measure(masks: np.ndarray, sources: Sequence[Dataset]) -> tuple[float | None, float | None]:
    """(area mm2, volume mm3) of a (S, R, C) boolean mask over ``sources``; None where
    PixelSpacing or SliceThickness is missing on any slice."""
    area, volume = 0.0, 0.0
    for mask, ds in zip(masks, sources, strict=True):
        px = _pixel_area_mm2(ds)
        if px is None:
            return None, None
        a = float(mask.sum()) * px
        area += a
        t = _thickness_mm(ds)
        volume = float("nan") if t is None or np.isnan(volume) else volume + a * t
    return area, None if np.isnan(volume) else volume


def build_results(
    sources: Sequence[Dataset],
    segmentation: np.ndarray,
    *,
    usable: bool,
    burden: float | None,
    model_name: str,
    model_version: str,
    secondary_capture: bool = False,
) -> ImagingResults:
    """The SEG, SR (and optional overlay) of one series.

    Args:
        sources: the series' single-frame source instances in the slice order the model
            saw (``MappedPatient.sop_instance_uids``).
        segmentation: (S_kept, size, size) labels from the image network (0, 1, 2) on
            the model's grid; S_kept slices spread over ``sources`` by ``select_slices``.
        usable: the quality gate's verdict; False is refused.
        burden: the fibrosis burden reported for the series (0..1), or None.
        model_name: algorithm name.
        model_version: the model version (algorithm version, and UID entropy).
        secondary_capture: also build the RGB overlay instances.

    Raises:
        ImagingResultsError: unusable series, inconsistent shapes, multi-frame sources
            or sources without the attributes a SEG needs (names the series UID).
    """
    series_uid = str(sources[0].SeriesInstanceUID) if sources else "?"
    if not usable:
        raise ImagingResultsError(
            f"series {series_uid}: not usable by the image quality gate; no results written"
        )
    seg = np.asarray(segmentation)
    if not sources or seg.ndim != 3 or seg.shape[0] == 0 or seg.shape[0] > len(sources):
        raise ImagingResultsError(
            f"series {series_uid}: segmentation {seg.shape} does not fit {len(sources)} slices"
        )
    if any(int(ds.get("NumberOfFrames", 1) or 1) != 1 for ds in sources):
        raise ImagingResultsError(f"series {series_uid}: multi-frame sources are not supported")
    kept = select_slices(len(sources), seg.shape[0])
    used = [sources[int(i)] for i in kept]
    masks = np.stack(
        [to_source_geometry(seg[k], int(ds.Rows), int(ds.Columns)) for k, ds in enumerate(used)]
    )
    if len({m.shape for m in masks}) > 1:
        raise ImagingResultsError(f"series {series_uid}: slices differ in Rows x Columns")
    binary = np.stack([masks >= 1, masks == ENHANCEMENT], axis=-1).astype(np.uint8)
    try:
        seg_ds = hd.seg.Segmentation(
            source_images=used,
            pixel_array=binary,  # (frames, rows, columns, segments)
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=_segments(model_name, model_version, series_uid),
            series_instance_uid=result_uid(series_uid, model_version, "seg-series"),
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=result_uid(series_uid, model_version, "seg"),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=model_name[:64],
            software_versions=model_version[:64],
            device_serial_number=model_version[:64],
            series_description=f"LGE segmentation ({model_name} {model_version})"[:64],
            omit_empty_frames=False,
        )
        sr_ds = _report(seg_ds, used, masks, burden, model_name, model_version, series_uid)
        sc = tuple(_overlays(used, masks, model_version, series_uid)) if secondary_capture else ()
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ImagingResultsError(
            f"series {series_uid}: results cannot be built ({type(exc).__name__}: {exc})"
        ) from None
    return ImagingResults(
        seg=seg_ds,
        sr=sr_ds,
        secondary_capture=sc,
        source_masks=masks,
        source_uids=tuple(str(ds.SOPInstanceUID) for ds in used),
    )


def _report(
    seg_ds: Dataset,
    used: Sequence[Dataset],
    masks: np.ndarray,
    burden: float | None,
    model_name: str,
    model_version: str,
    series_uid: str,
) -> Dataset:
    algo = hd.sr.AlgorithmIdentification(name=model_name, version=model_version)
    groups = []
    for number, label, mask in (
        (1, "myocardium", masks >= 1),
        (2, "enhancement", masks == ENHANCEMENT),
    ):
        area, volume = _measure(mask, used)
        items = []
        if area is not None:
            items.append(
                hd.sr.Measurement(
                    name=codes.SCT.Area,
                    value=area,
                    unit=codes.UCUM.SquareMillimeter,
                    algorithm_id=algo,
                )
            )
        if volume is not None:
            items.append(
                hd.sr.Measurement(
                    name=codes.SCT.Volume,
                    value=volume,
                    unit=codes.UCUM.CubicMillimeter,
                    algorithm_id=algo,
                )
            )
        if number == 2 and burden is not None:
            items.append(
                hd.sr.Measurement(
                    name=BURDEN_CODE,
                    value=round(100.0 * float(burden), 4),
                    unit=codes.UCUM.Percent,
                    algorithm_id=algo,
                )
            )
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=result_uid(series_uid, model_version, f"tracking-{label}"),
                    identifier=f"LGE {label}",
                ),
                referenced_segment=hd.sr.ReferencedSegment.from_segmentation(seg_ds, number),
                finding_type=MYOCARDIUM_CODE if number == 1 else FIBROSIS_CODE,
                algorithm_id=algo,
                measurements=items,
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=result_uid(model_name, model_version, "device"),
            name=model_name[:64],
            manufacturer_name=MANUFACTURER,
            model_name=model_name[:64],
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.MagneticResonanceImagingOfHeart,
        imaging_measurements=groups,
        referenced_images=list(used),
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[*used, seg_ds],
        content=report,
        series_instance_uid=result_uid(series_uid, model_version, "sr-series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=result_uid(series_uid, model_version, "sr"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=f"LGE fibrosis burden ({model_name} {model_version})"[:64],
    )


def _orientation_letter(vector: Sequence[float]) -> str:
    """The PatientOrientation letter of a direction's dominant axis (highdicom accepts
    one letter per direction)."""
    axis = int(np.argmax(np.abs(np.asarray(vector, dtype=float))))
    return (("L", "R"), ("P", "A"), ("H", "F"))[axis][0 if vector[axis] > 0 else 1]


def _overlays(
    used: Sequence[Dataset], masks: np.ndarray, model_version: str, series_uid: str
) -> list[Dataset]:
    out: list[Dataset] = []
    for k, (ds, mask) in enumerate(zip(used, masks, strict=True)):
        rgb = overlay_rgb(slice_pixels(ds), mask)
        iop = [float(v) for v in ds.ImageOrientationPatient]
        # highdicom annotates ints, takes the PixelSpacing decimals as they are
        spacing = cast("tuple[int, int]", tuple(float(v) for v in ds.PixelSpacing))
        out.append(
            hd.sc.SCImage.from_ref_dataset(
                ref_dataset=ds,
                pixel_array=rgb,
                photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
                bits_allocated=8,
                coordinate_system=hd.CoordinateSystemNames.PATIENT,
                series_instance_uid=result_uid(series_uid, model_version, "sc-series"),
                series_number=SC_SERIES_NUMBER,
                sop_instance_uid=result_uid(series_uid, model_version, f"sc-{k}"),
                instance_number=k + 1,
                manufacturer=MANUFACTURER,
                pixel_spacing=spacing,
                patient_orientation=(
                    _orientation_letter(iop[:3]),
                    _orientation_letter(iop[3:]),
                ),
                series_description="LGE segmentation overlay (not for diagnosis)",
            )
        )
        out[-1].Laterality = ""  # General Series type 2C: the heart is not a paired organ
    return out
