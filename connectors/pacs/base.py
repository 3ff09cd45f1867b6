"""What every imaging source hands to the application."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pydicom import Dataset


@dataclass(frozen=True)
class SeriesRef:
    """A series found for a patient (from C-FIND, QIDO-RS or a folder scan)."""

    patient_id: str  # DICOM PatientID (the Patient's MRN identifier value)
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    series_description: str
    protocol_name: str
    study_date: str  # YYYYMMDD or ""
    n_instances: int
    # Acquisition attributes as the query returned them (series-level return keys; any of
    # them may be empty on a PACS that does not answer them).  Multi-valued attributes are
    # joined with backslashes, as DICOM writes them.
    series_number: int | None = None
    manufacturer: str = ""
    sequence_name: str = ""  # (0018,0024), e.g. Siemens "*tfi2d1_12"
    scanning_sequence: str = ""  # (0018,0020), e.g. GR\IR
    sequence_variant: str = ""  # (0018,0021), e.g. SK\SP\MP
    image_type: str = ""  # (0008,0008), e.g. ORIGINAL\PRIMARY\M\ND
    inversion_time_ms: float | None = None  # (0018,0082)
    contrast_agent: str = ""  # ContrastBolusAgent (0018,0010)
    contrast_route: str = ""  # ContrastBolusRoute (0018,1040)


class ImagingSource(Protocol):
    """A PACS or folder that can list a patient's series and retrieve one."""

    def find_series(self, patient_id: str, *, modality: str = "MR") -> list[SeriesRef]:
        """All series of ``patient_id`` (DICOM PatientID) of ``modality``."""
        ...

    def retrieve_series(self, ref: SeriesRef) -> list[Dataset]:
        """Every instance of the series, as pydicom Datasets with pixel data."""
        ...

    def close(self) -> None: ...
