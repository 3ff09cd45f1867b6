"""On-disk cache of retrieved series, keyed by SeriesInstanceUID.

Layout: ``<root>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` plus ``.complete.json``, a
manifest listing every file with its size.  A series is filled in a private staging
directory ``<root>/.staging/<uid>.<random>`` and renamed into place in one step after
its manifest is written, so a reader never sees half a series; a directory whose files
do not match the manifest (e.g. after a power cut) is discarded and fetched again.
A per-series file lock keeps two processes from retrieving the same series at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
from filelock import FileLock, Timeout
from pydicom import Dataset

from connectors.errors import DicomInvalid, PacsError

log = logging.getLogger("connectors.pacs.cache")

MARKER = ".complete.json"
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def check_uid(uid: str, what: str = "UID") -> str:
    """``uid`` if it is a syntactically valid DICOM UID (digits and dots, <= 64 chars).

    Raises:
        DicomInvalid: naming ``what`` and the value.
    """
    uid = uid.strip().rstrip("\x00")
    if not uid or len(uid) > 64 or not _UID_RE.fullmatch(uid):
        raise DicomInvalid(f"{what} {uid!r} is not a valid DICOM UID")
    return uid


def _sort_key(ds: Dataset) -> tuple[int, str]:
    number = ds.get("InstanceNumber")
    try:
        n = int(number) if number not in (None, "") else 1 << 30
    except (TypeError, ValueError):
        n = 1 << 30
    return n, str(ds.get("SOPInstanceUID", ""))


class StagedSeries:
    """Instances of one series being written; becomes visible on :meth:`SeriesCache.stage` exit.

    Args:
        series_uid: the SeriesInstanceUID every instance must carry.
        path: the private staging directory.
    """

    def __init__(self, series_uid: str, path: Path) -> None:
        self.series_uid = series_uid
        self.path = path
        self.files: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.files)

    def clear(self) -> None:
        """Forget what was collected so far (a retrieval starts over)."""
        for name in self.files:
            (self.path / name).unlink(missing_ok=True)
        self.files.clear()

    def add_bytes(self, sop_instance_uid: str, data: bytes) -> None:
        """Store one encoded instance (a DICOM file with its File Meta Information)."""
        name = check_uid(sop_instance_uid, "SOPInstanceUID") + ".dcm"
        with open(self.path / name, "wb") as fh:
            fh.write(data)
        self.files[name] = len(data)

    def add_dataset(self, ds: Dataset) -> None:
        """Store one decoded instance (it must carry ``file_meta``)."""
        name = check_uid(str(ds.SOPInstanceUID), "SOPInstanceUID") + ".dcm"
        target = self.path / name
        ds.save_as(target, enforce_file_format=True)
        self.files[name] = target.stat().st_size


class SeriesCache:
    """Retrieved series on disk.

    Args:
        root: cache directory (created when missing).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        try:
            (self.root / ".staging").mkdir(parents=True, exist_ok=True)
            (self.root / ".locks").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PacsError(f"cache directory {self.root} cannot be created: {exc}") from exc

    def series_dir(self, series_uid: str) -> Path:
        return self.root / check_uid(series_uid, "SeriesInstanceUID")

    def lock(self, series_uid: str, timeout_s: float = 600.0) -> FileLock:
        """An inter-process lock for filling ``series_uid``."""
        uid = check_uid(series_uid, "SeriesInstanceUID")
        return FileLock(str(self.root / ".locks" / f"{uid}.lock"), timeout=timeout_s)

    def _manifest(self, series_uid: str) -> dict[str, int] | None:
        folder = self.series_dir(series_uid)
        marker = folder / MARKER
        if not marker.is_file():
            return None
        try:
            files = json.loads(marker.read_text(encoding="utf-8"))["files"]
            ok = all((folder / n).stat().st_size == size for n, size in files.items())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            log.warning("cached series %s is damaged; discarding it", series_uid)
            self.evict(series_uid)
            return None
        return {str(n): int(s) for n, s in files.items()}

    def has(self, series_uid: str) -> bool:
        """True when a complete, undamaged copy of the series is cached."""
        return self._manifest(series_uid) is not None

    def load(self, series_uid: str) -> list[Dataset] | None:
        """The cached instances (ordered by InstanceNumber), or None when not cached."""
        files = self._manifest(series_uid)
        if files is None:
            return None
        folder = self.series_dir(series_uid)
        try:
            datasets: list[Dataset] = [pydicom.dcmread(folder / n) for n in sorted(files)]
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            log.warning("cached series %s unreadable (%s); discarding it", series_uid, exc)
            self.evict(series_uid)
            return None
        datasets.sort(key=_sort_key)
        with contextlib.suppress(OSError):  # "last used", for expire(): best effort
            os.utime(folder / MARKER)
        return datasets

    def expire(
        self, unused_for_s: float, now: float | None = None, dry_run: bool = False
    ) -> list[str]:
        """Evict every series not stored or read for ``unused_for_s`` seconds.

        A series being filled under its lock by another process is skipped, as is
        anything that is not a series directory (staging, locks, index files).

        Returns:
            the SeriesInstanceUIDs evicted (with ``dry_run``: that would be; nothing is
            removed).
        """
        now = time.time() if now is None else now
        gone: list[str] = []
        for folder in sorted(self.root.iterdir()):
            uid = folder.name
            if uid.startswith(".") or not folder.is_dir() or not _UID_RE.fullmatch(uid):
                continue
            marker = folder / MARKER
            try:
                last = marker.stat().st_mtime if marker.is_file() else folder.stat().st_mtime
            except OSError:
                continue
            if now - last < unused_for_s:
                continue
            if dry_run:
                gone.append(uid)
                continue
            try:
                with self.lock(uid, timeout_s=0):
                    self.evict(uid)
            except Timeout:
                continue
            gone.append(uid)
        return gone

    def evict(self, series_uid: str) -> None:
        """Remove a series from the cache (no error when absent)."""
        folder = self.series_dir(series_uid)
        if folder.exists():
            trash = Path(tempfile.mkdtemp(dir=self.root / ".staging", prefix="evict."))
            os.replace(folder, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)

    @contextmanager
    def stage(self, series_uid: str, *, source: str) -> Iterator[StagedSeries]:
        """Collect a series' instances; on normal exit they are published atomically.

        Raising inside the block (or collecting nothing) discards the staged files.
        """
        uid = check_uid(series_uid, "SeriesInstanceUID")
        path = Path(tempfile.mkdtemp(dir=self.root / ".staging", prefix=f"{uid}."))
        staged = StagedSeries(uid, path)
        try:
            yield staged
            if not staged.files:
                raise PacsError(f"series {uid}: nothing was retrieved, nothing cached")
            manifest = {
                "series_instance_uid": uid,
                "n_instances": len(staged.files),
                "source": source,
                "retrieved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": staged.files,
            }
            with open(path / MARKER, "w", encoding="utf-8") as fh:
                json.dump(manifest, fh)
                fh.flush()
                os.fsync(fh.fileno())
            final = self.root / uid
            if final.exists():  # another process won the race, or a damaged copy
                self.evict(uid)
            os.replace(path, final)
        finally:
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
