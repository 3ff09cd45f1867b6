"""The listener's spool: pending studies on disk until they are scored.

Layout under ``[listener] spool_dir``::

    pending/<key>/study.json      study UID, DICOM PatientID, first/last arrival, attempts
    pending/<key>/instances/*.dcm  received instances (Storage SCP mode only)
    failed/<key>/                  studies given up after ``max_attempts``
    orthanc-cursor.json            last change of Orthanc's feed already noted

``<key>`` is a hash of the Study Instance UID (no PHI in paths).  Every write is a
temporary file renamed into place, and ``study.json`` is written before the instance, so a
process killed at any point leaves a study that the next start scores.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from connectors.errors import DicomInvalid


@dataclass
class PendingStudy:
    """A study waiting to be scored.

    Args:
        study_uid: Study Instance UID.
        patient_id: DICOM PatientID of its instances.
        first_seen: arrival of its first instance (epoch seconds).
        last_seen: arrival of its latest instance (epoch seconds).
        attempts: scoring attempts that failed.
        not_before: do not try again before this time (epoch seconds).
        error: the last failure reason (error type and id-only message).
    """

    study_uid: str
    patient_id: str
    first_seen: float
    last_seen: float
    attempts: int = 0
    not_before: float = 0.0
    error: str = ""


def _key(study_uid: str) -> str:
    return hashlib.sha256(study_uid.encode()).hexdigest()[:24]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class StudySpool:
    """Pending studies of the listener, kept on disk (thread-safe within a process).

    Args:
        root: the spool folder (created when missing).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        (self.root / "pending").mkdir(parents=True, exist_ok=True)
        (self.root / "failed").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def study_dir(self, study_uid: str) -> Path:
        return self.root / "pending" / _key(study_uid)

    def instances_dir(self, study_uid: str) -> Path:
        return self.study_dir(study_uid) / "instances"

    def _save(self, study: PendingStudy) -> None:
        folder = self.study_dir(study.study_uid)
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(folder / "study.json", json.dumps(asdict(study)).encode())

    def _load(self, folder: Path) -> PendingStudy | None:
        try:
            return PendingStudy(**json.loads((folder / "study.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def note(self, study_uid: str, patient_id: str, now: float) -> PendingStudy:
        """Record that an instance of the study arrived at ``now``."""
        if not study_uid or not patient_id:
            raise DicomInvalid("instance without StudyInstanceUID or PatientID refused")
        with self._lock:
            study = self._load(self.study_dir(study_uid))
            if study is None:
                study = PendingStudy(study_uid, patient_id, first_seen=now, last_seen=now)
            study.last_seen = max(study.last_seen, now)
            self._save(study)
            return study

    def add_instance(
        self, study_uid: str, patient_id: str, sop_uid: str, data: bytes, now: float
    ) -> None:
        """Keep a received instance until its study is scored.

        Raises:
            DicomInvalid: no Study or SOP Instance UID, or no PatientID.
            OSError: the file cannot be written.
        """
        if not sop_uid:
            raise DicomInvalid(f"instance of study {study_uid} without SOPInstanceUID refused")
        self.note(study_uid, patient_id, now)
        folder = self.instances_dir(study_uid)
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(folder / f"{_key(sop_uid)}.dcm", data)

    def pending(self) -> list[PendingStudy]:
        """Every pending study, oldest first."""
        found = [self._load(d) for d in (self.root / "pending").iterdir() if d.is_dir()]
        return sorted((s for s in found if s is not None), key=lambda s: s.first_seen)

    def due(self, now: float, stable_seconds: float) -> list[PendingStudy]:
        """Pending studies quiet for ``stable_seconds`` and not waiting for a retry."""
        return [
            s for s in self.pending() if now - s.last_seen >= stable_seconds and now >= s.not_before
        ]

    def done(self, study: PendingStudy) -> None:
        """The study is scored: forget it and its files."""
        with self._lock:
            shutil.rmtree(self.study_dir(study.study_uid), ignore_errors=True)

    def retry(self, study: PendingStudy, reason: str, not_before: float, *, count: bool) -> None:
        """Try the study again after ``not_before``; ``count``: this was a failed attempt."""
        with self._lock:
            current = self._load(self.study_dir(study.study_uid)) or study
            current.attempts += int(count)
            current.not_before = not_before
            current.error = reason
            self._save(current)

    def give_up(self, study: PendingStudy, reason: str) -> None:
        """Move the study to ``failed/`` (kept for an operator; never retried)."""
        with self._lock:
            study.error = reason
            self._save(study)
            target = self.root / "failed" / _key(study.study_uid)
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(str(self.study_dir(study.study_uid)), str(target))

    def failed(self) -> list[PendingStudy]:
        found = [self._load(d) for d in (self.root / "failed").iterdir() if d.is_dir()]
        return [s for s in found if s is not None]

    # -- Orthanc change feed cursor ----------------------------------------------------
    def cursor(self) -> int | None:
        try:
            return int(json.loads((self.root / "orthanc-cursor.json").read_text())["last"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def set_cursor(self, last: int) -> None:
        _write_atomic(self.root / "orthanc-cursor.json", json.dumps({"last": last}).encode())
