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


class ImagingSource(Protocol):
    """A PACS or folder that can list a patient's series and retrieve one."""

    def find_series(self, patient_id: str, *, modality: str = "MR") -> list[SeriesRef]:
        """All series of ``patient_id`` (DICOM PatientID) of ``modality``."""
        ...

    def retrieve_series(self, ref: SeriesRef) -> list[Dataset]:
        """Every instance of the series, as pydicom Datasets with pixel data."""
        ...

    def close(self) -> None: ...
