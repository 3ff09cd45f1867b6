"""The embedded-default imaging source: a folder of DICOM files, searched recursively.

The first :meth:`DicomFolderSource.find_series` call scans every file's header (read with
``stop_before_pixels`` and only the tags a :class:`SeriesRef` needs) and indexes series by
PatientID; an optional index cache file makes later scans of an unchanged folder cost a
``stat`` per file.  A file that is not DICOM, or lacks a UID, is skipped with a warning naming the
file (see :attr:`DicomFolderSource.warnings`); it never stops the scan.  Pixels are read
only by :meth:`retrieve_series`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom import Dataset
from pydicom.errors import InvalidDicomError

from connectors.errors import DicomInvalid
from connectors.pacs.base import SeriesRef
from connectors.pacs.query import RECOGNITION_TAGS, dataset_text, recognition_fields

log = logging.getLogger("mprtm.connectors.dicomfolder")

#: header fields indexed per file, in this order (the index cache stores them as a list)
_HEADER_TAGS = [
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "Modality",
    "SeriesDescription",
    "ProtocolName",
    "StudyDate",
    *RECOGNITION_TAGS,
]
_N_BASE = 8  # PatientID .. StudyDate; the recognition attributes follow
_CACHE_VERSION = 2
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
    attrs: dict[str, str] = field(default_factory=dict)  # recognition attributes (text)
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
            **recognition_fields(self.attrs),
        )


def read_header(path: Path) -> Dataset:
    """The header tags a SeriesRef needs, without pixels.

    Raises:
        DicomInvalid: naming the file when it is not DICOM or cannot be read.
    """
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError) as exc:
        raise DicomInvalid(
            f"{path.name}: not a readable DICOM file ({type(exc).__name__})"
        ) from None


class DicomFolderSource:
    """ImagingSource over a folder of DICOM files.

    Args:
        folder: root folder; every regular file below it is a candidate (hidden files and
            common non-DICOM suffixes such as ``.json`` are skipped).
        index_cache: a JSON file that keeps each file's indexed header fields with its size
            and modification time, so a later scan reads only new or changed files (None:
            no cache).  Written atomically; a cache that cannot be read is ignored.

    Raises:
        DicomInvalid: the folder does not exist.
    """

    def __init__(self, folder: str | Path, *, index_cache: str | Path | None = None) -> None:
        self.folder = Path(folder).resolve()
        self.index_cache = Path(index_cache) if index_cache else None
        if not self.folder.is_dir():
            raise DicomInvalid(f"DICOM folder not found: {self.folder}")
        self.warnings: list[str] = []
        self._series: dict[str, _Series] | None = None
        self._lock = threading.Lock()
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

    def _header_fields(self, path: Path) -> list[str] | str:
        """The indexed header fields of one file, or the reason it is skipped."""
        try:
            ds = read_header(path)
        except DicomInvalid as exc:
            reason = str(exc).rsplit("(", 1)[-1].rstrip(")")
            return f"{self._rel(path)}: not a readable DICOM file ({reason}); skipped"
        fields = [dataset_text(ds, t) for t in _HEADER_TAGS]
        if not fields[1] or not fields[2] or not fields[3]:
            return f"{self._rel(path)}: no Study/Series/SOP Instance UID; skipped"
        return fields

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.folder))
        except ValueError:
            return str(path)

    def _load_cache(self) -> dict[str, Any]:
        if self.index_cache is None or not self.index_cache.is_file():
            return {}
        try:
            data = json.loads(self.index_cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if data.get("version") != _CACHE_VERSION or data.get("folder") != str(self.folder):
            return {}
        files = data.get("files")
        return files if isinstance(files, dict) else {}

    def _save_cache(self, files: dict[str, Any]) -> None:
        if self.index_cache is None:
            return
        payload = {"version": _CACHE_VERSION, "folder": str(self.folder), "files": files}
        try:
            self.index_cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.index_cache.with_name(self.index_cache.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(payload), encoding="utf-8")
            os.replace(tmp, self.index_cache)
        except OSError as exc:
            log.warning("DICOM folder index cache %s not written (%s)", self.index_cache, exc)

    def scan(self) -> None:
        """(Re)build the series index from the files' headers (reusing the index cache for
        files whose size and modification time are unchanged)."""
        cached = self._load_cache()
        fresh: dict[str, Any] = {}
        changed = False
        series: dict[str, _Series] = {}
        by_patient: dict[str, list[str]] = {}
        for path in self._files():
            rel = self._rel(path)
            try:
                st = path.stat()
            except OSError as exc:
                self._warn(f"{rel}: cannot be read ({type(exc).__name__}); skipped")
                continue
            stamp = [st.st_size, st.st_mtime_ns]
            hit = cached.get(rel)
            if isinstance(hit, list) and len(hit) == 3 and hit[:2] == stamp:
                fields = hit[2]
            else:
                fields = self._header_fields(path)
                changed = True
            fresh[rel] = [*stamp, fields]
            if isinstance(fields, str):
                self._warn(fields)
                continue
            pid, study, uid, _sop, modality, desc, protocol, date = fields[:_N_BASE]
            s = series.get(uid)
            if s is None:
                attrs = dict(zip(_HEADER_TAGS[_N_BASE:], fields[_N_BASE:], strict=False))
                s = _Series(pid, study, uid, modality, desc, protocol, date, attrs)
                series[uid] = s
                by_patient.setdefault(pid, []).append(uid)
            s.files.append(path)
        if changed or len(fresh) != len(cached):
            self._save_cache(fresh)
        self._series = series
        self._by_patient = by_patient

    def _index(self) -> dict[str, _Series]:
        series = self._series
        if series is None:
            with self._lock:  # one scan even when several threads ask at once
                if self._series is None:
                    self.scan()
                series = self._series
        assert series is not None
        return series

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
