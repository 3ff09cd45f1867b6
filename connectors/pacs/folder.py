"""The embedded-default imaging source: a folder of DICOM files, searched recursively.

The first :meth:`DicomFolderSource.find_series` call scans every file's header (read with
``stop_before_pixels`` and only the tags a :class:`SeriesRef` needs) and indexes series by
PatientID.  A file that is not DICOM, or lacks a UID, is skipped with a warning naming the
file (see :attr:`DicomFolderSource.warnings`); it never stops the scan.  Pixels are read
only by :meth:`retrieve_series`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom import Dataset
from pydicom.errors import InvalidDicomError

from connectors.errors import DicomInvalid
from connectors.pacs.base import SeriesRef

log = logging.getLogger("mprtm.connectors.dicomfolder")

_HEADER_TAGS = [
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "Modality",
    "SeriesDescription",
    "ProtocolName",
    "StudyDate",
]
_SKIP_SUFFIXES = (".json", ".txt", ".csv", ".npz", ".npy", ".md", ".xml", ".png", ".jpg")


@dataclass
class _Series:
    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    description: str
    protocol: str
    study_date: str
    files: list[Path] = field(default_factory=list)

    def ref(self) -> SeriesRef:
        return SeriesRef(
            patient_id=self.patient_id,
            study_instance_uid=self.study_uid,
            series_instance_uid=self.series_uid,
            modality=self.modality,
            series_description=self.description,
            protocol_name=self.protocol,
            study_date=self.study_date,
            n_instances=len(self.files),
        )


def read_header(path: Path) -> Dataset:
    """The header tags a SeriesRef needs, without pixels.

    Raises:
        DicomInvalid: naming the file when it is not DICOM or cannot be read.
    """
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as exc:
        raise DicomInvalid(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None


class DicomFolderSource:
    """ImagingSource over a folder of DICOM files.

    Args:
        folder: root folder; every regular file below it is a candidate (hidden files and
            common non-DICOM suffixes such as ``.json`` are skipped).

    Raises:
        DicomInvalid: the folder does not exist.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DicomInvalid(f"DICOM folder not found: {self.folder}")
        self.warnings: list[str] = []
        self._series: dict[str, _Series] | None = None
        self._by_patient: dict[str, list[str]] = {}

    def _files(self) -> list[Path]:
        out = []
        for root, dirs, files in os.walk(self.folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if name.startswith(".") or name.lower().endswith(_SKIP_SUFFIXES):
                    continue
                if name == "DICOMDIR":
                    continue
                out.append(Path(root) / name)
        return out

    def _warn(self, msg: str) -> None:
        self.warnings.append(msg)
        log.warning("%s", msg)

    def scan(self) -> None:
        """(Re)build the series index from the files' headers."""
        series: dict[str, _Series] = {}
        by_patient: dict[str, list[str]] = {}
        for path in self._files():
            try:
                ds = read_header(path)
            except DicomInvalid as exc:
                self._warn(f"{exc}; skipped")
                continue
            uid = str(ds.get("SeriesInstanceUID", "") or "")
            study = str(ds.get("StudyInstanceUID", "") or "")
            if not uid or not study or not ds.get("SOPInstanceUID"):
                self._warn(f"{path}: no Study/Series/SOP Instance UID; skipped")
                continue
            s = series.get(uid)
            if s is None:
                pid = str(ds.get("PatientID", "") or "")
                s = _Series(
                    patient_id=pid,
                    study_uid=study,
                    series_uid=uid,
                    modality=str(ds.get("Modality", "") or ""),
                    description=str(ds.get("SeriesDescription", "") or ""),
                    protocol=str(ds.get("ProtocolName", "") or ""),
                    study_date=str(ds.get("StudyDate", "") or ""),
                )
                series[uid] = s
                by_patient.setdefault(pid, []).append(uid)
            s.files.append(path)
        self._series = series
        self._by_patient = by_patient

    def _index(self) -> dict[str, _Series]:
        if self._series is None:
            self.scan()
        assert self._series is not None
        return self._series

    def patient_ids(self) -> list[str]:
        """Every PatientID that has at least one series."""
        self._index()
        return list(self._by_patient)

    def find_series(self, patient_id: str, *, modality: str = "MR") -> list[SeriesRef]:
        index = self._index()
        refs = [index[uid].ref() for uid in self._by_patient.get(patient_id, [])]
        return [r for r in refs if not modality or r.modality == modality]

    def series_files(self, ref: SeriesRef) -> list[Path]:
        """The files of a series found by :meth:`find_series`."""
        s = self._index().get(ref.series_instance_uid)
        if s is None:
            raise DicomInvalid(f"series {ref.series_instance_uid} is not in {self.folder}")
        return list(s.files)

    def retrieve_series(self, ref: SeriesRef) -> list[Dataset]:
        out: list[Dataset] = []
        for path in self.series_files(ref):
            try:
                out.append(pydicom.dcmread(path))
            except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as exc:
                raise DicomInvalid(
                    f"{path} (series {ref.series_instance_uid}): unreadable ({type(exc).__name__})"
                ) from None
        return out

    def close(self) -> None:
        self._series = None
        self._by_patient = {}
