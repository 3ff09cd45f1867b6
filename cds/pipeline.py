"""The one place that wires a patient's sources into a model input.

``pull`` (FHIR source + imaging source -> MappedPatient) = the FHIR pull, then
``assemble``: :func:`cds.mapping.map_record`, then LGE series search, selection
(:mod:`connectors.pacs.series`), retrieval, slice ordering and pixels
(:mod:`connectors.pacs.pixels`).

A series whose files are bad (:class:`connectors.errors.DicomInvalid`), or whose DICOM
attributes show it is not LGE (:func:`connectors.pacs.series.not_lge_reason`: cine, T2,
not cardiac), leaves the patient without an image, a warning naming the UID and
``MappedPatient.image_rejected`` (shown as "MRI could not be analysed: <reason>").  A
PACS that cannot be reached (other :class:`connectors.errors.PacsError`) propagates, so a
batch can record the patient as failed rather than silently scoring without images.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from fhir.resources.R4B.patient import Patient
from pydicom import Dataset

from cds.clinical_tables import observation_search_codes
from cds.config import Settings
from cds.mapping import MappedPatient, map_record
from connectors.errors import DicomInvalid
from connectors.fhir.base import FhirSource, PatientRecord
from connectors.pacs.base import ImagingSource, SeriesRef
from connectors.pacs.pixels import SeriesVolume, series_volume
from connectors.pacs.series import not_lge_reason, order_slices, select_lge_series

log = logging.getLogger("mprtm.pipeline")

MRN_TYPE = ("http://terminology.hl7.org/CodeSystem/v2-0203", "MR")


def dicom_patient_ids(patient: Patient, system: str = "") -> list[str]:
    """Candidate DICOM PatientIDs of a FHIR Patient, best first.

    ``system`` set: that identifier's value only.  Otherwise the MR-typed identifier, the
    other identifiers, then the logical id.
    """
    idents = patient.identifier or []
    if system:
        return [str(i.value) for i in idents if i.system == system and i.value]
    out: list[str] = []

    def is_mrn(ident: object) -> bool:
        codings = getattr(getattr(ident, "type", None), "coding", None) or []
        return any((c.system, c.code) == MRN_TYPE or c.code == "MR" for c in codings)

    for ident in sorted(idents, key=lambda i: not is_mrn(i)):
        if ident.value and str(ident.value) not in out:
            out.append(str(ident.value))
    if patient.id and str(patient.id) not in out:
        out.append(str(patient.id))
    return out


def medical_record_number(patient: Patient) -> str | None:
    """The value of the patient's MR-typed identifier (the MRN the inbox searches), or None."""
    for ident in patient.identifier or []:
        codings = getattr(getattr(ident, "type", None), "coding", None) or []
        if ident.value and any(c.code == MRN_TYPE[1] for c in codings):
            return str(ident.value)[:128]
    return None


def find_lge_series(
    patient: Patient, imaging: ImagingSource, *, as_of: dt.date, settings: Settings
) -> SeriesRef | None:
    """The patient's LGE series on ``as_of`` per ``pacs.*`` settings, or None."""
    for pid in dicom_patient_ids(patient, settings.pacs.patient_id_system):
        refs = imaging.find_series(pid, modality="MR")
        if refs:
            return select_lge_series(
                refs,
                include=settings.pacs.lge_patterns,
                exclude=settings.pacs.exclude_patterns,
                as_of=as_of,
                max_age_days=settings.pacs.lge_max_age_days,
                prefer_phase_sensitive=settings.pacs.lge_prefer_phase_sensitive,
            )
    return None


@dataclass(frozen=True)
class LoadedSeries:
    """A retrieved series as the model's image input.

    Args:
        volume: the image, fingerprint, slice UIDs and spacing (:class:`SeriesVolume`).
        ordered: the datasets in spatial order (one per slice; multi-frame instances
            split into frames).
        slice_order: how they were ordered (``position`` or ``instance_number``).
    """

    volume: SeriesVolume
    ordered: list[Dataset]
    slice_order: str


def load_series(datasets: Sequence[Dataset], image_size: int) -> LoadedSeries:
    """Order a retrieved series' slices and convert them to the model's image input
    (``image_size``: the model's ``config.input_size``).  The batch, ``mprtm segment`` and
    ``mprtm train-segmentation`` read series through here.

    Raises:
        DicomInvalid: the slices cannot be ordered or decoded (names the UID).
    """
    ordered, how = order_slices(datasets)
    return LoadedSeries(series_volume(ordered, image_size), ordered, how)


def attach_image(
    mapped: MappedPatient,
    record: PatientRecord,
    imaging: ImagingSource,
    *,
    image_size: int,
    settings: Settings,
) -> None:
    """Find, select, retrieve, order and convert the LGE series into ``mapped``."""
    ref = find_lge_series(record.patient, imaging, as_of=mapped.as_of, settings=settings)
    if ref is None:
        return
    mapped.lge_series = ref
    try:
        datasets = imaging.retrieve_series(ref)
        not_lge = not_lge_reason(datasets)
        if not_lge is not None:
            mapped.image_rejected = f"not an LGE series: {not_lge}"
            mapped.warnings.append(
                f"LGE series {ref.series_instance_uid}: not an LGE series ({not_lge}); "
                "no image used"
            )
            return
        loaded = load_series(datasets, image_size)
        volume, how = loaded.volume, loaded.slice_order
    except DicomInvalid as exc:
        mapped.warnings.append(f"LGE series {ref.series_instance_uid}: {exc}; no image used")
        mapped.image_rejected = f"the series could not be read ({exc})"
        return
    mapped.model_input.image = volume.image
    mapped.model_input.image_fingerprint = volume.fingerprint
    mapped.model_input.image_spacing_mm = volume.pixel_spacing_mm
    mapped.n_slices = int(volume.image.shape[0])
    mapped.slice_order = how
    mapped.sop_instance_uids = volume.sop_instance_uids
    for study in record.imaging_studies:
        uids = {str(s.uid) for s in study.series or []}
        idents = {str(i.value or "").removeprefix("urn:oid:") for i in study.identifier or []}
        if ref.series_instance_uid in uids or ref.study_instance_uid in idents:
            key = f"ImagingStudy/{study.id}"
            if key not in mapped.basis:
                mapped.basis.append(key)


def assemble(
    record: PatientRecord,
    imaging: ImagingSource | None,
    *,
    as_of: dt.date,
    image_size: int,
    settings: Settings,
) -> MappedPatient:
    """One patient's model input with everything needed to explain it.

    Args:
        record: the patient's FHIR resources.
        imaging: where the LGE series comes from (None: no image).
        as_of: inputs as known on this day.
        image_size: in-plane side of the image input (the model preset's).
        settings: ``fhir.observation_window_days``, ``fhir.max_notes``,
            ``fhir.notes_window_days`` and the ``pacs`` selection keys are used.
    """
    mapped = map_record(
        record,
        as_of=as_of,
        window_days=settings.fhir.observation_window_days,
        max_notes=settings.fhir.max_notes,
        notes_window_days=settings.fhir.notes_window_days,
    )
    mapped.mrn = medical_record_number(record.patient)
    if imaging is not None:
        attach_image(mapped, record, imaging, image_size=image_size, settings=settings)
    return mapped


def pull_record(
    patient_id: str, fhir: FhirSource, *, as_of: dt.date, settings: Settings
) -> PatientRecord:
    """One patient's FHIR resources: only the LOINC codes the mapping uses, only the
    observation window before ``as_of``.

    Raises:
        connectors.errors.ResourceNotFound: unknown patient.
        connectors.errors.ConnectorError: the source failed after its retries.
    """
    since = as_of - dt.timedelta(days=settings.fhir.observation_window_days)
    return fhir.patient_record(patient_id, loinc_codes=observation_search_codes(), since=since)


def pull(
    patient_id: str,
    fhir: FhirSource,
    imaging: ImagingSource | None,
    *,
    as_of: dt.date,
    image_size: int,
    settings: Settings,
) -> MappedPatient:
    """:func:`pull_record`, then :func:`assemble` (the batch runs the two as its ``pull``
    and ``map`` steps).

    Raises:
        connectors.errors.ResourceNotFound: unknown patient.
        connectors.errors.ConnectorError: a source failed after its retries.
    """
    record = pull_record(patient_id, fhir, as_of=as_of, settings=settings)
    return assemble(record, imaging, as_of=as_of, image_size=image_size, settings=settings)
