"""Score a patient when a new LGE study arrives (``mprtm listen``).

Steps and their named inputs/outputs:

1. ``receive``: instances -> pending studies in the spool (:mod:`cds._spool`), either by
   our Storage SCP (``[listener] mode = "scp"``, the target of a PACS or modality routing
   rule; the SCP of the C-MOVE retrievals, :class:`connectors.pacs._scp.StorageScp`, with
   the same peer allow-list and bind address) or from Orthanc's change feed (``"orthanc"``:
   ``GET /changes``, NewInstance of modality MR);
2. ``stable``: a study no instance of which arrived for ``stable_seconds`` is due;
3. ``patient``: its DICOM PatientID -> the FHIR patient id (a followed patient whose MRN or
   id it is, else the PatientID itself);
4. ``score``: one batch run of that one patient (:class:`cds.batch.runner.BatchRunner`, so
   the same lock, image cache, prediction, RiskAssessment, alerts and SEG/SR write-back as
   the nightly batch); in SCP mode the received files are the first imaging source;
5. ``forget``: the study leaves the spool only once scored; a failure is retried after
   ``retry_after_s`` (``max_attempts`` times, then it moves to ``failed/``), and a held batch
   lock (the nightly is scoring) is waited out without counting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from pydicom import Dataset
from sqlalchemy import Engine, or_, select

from cds._spool import PendingStudy, StudySpool
from cds.batch._scoring import Scorer, _reason
from cds.batch.runner import BatchError, BatchRunner, RunOptions
from cds.config import Settings
from cds.db import make_engine, session_factory, session_scope
from cds.db.models import Patient
from cds.errors import MprtmError
from connectors.errors import DicomInvalid, PacsError
from connectors.pacs._scp import STATUS_SUCCESS, StorageScp
from connectors.pacs.base import ImagingSource, SeriesRef
from connectors.pacs.folder import DicomFolderSource

log = logging.getLogger("mprtm.listener")


class ListenerError(MprtmError):
    """The listener cannot run (SCP port taken, Orthanc's change feed unreadable)."""


class _SpoolFirst:
    """The study's received files first, then the configured imaging source (prior
    studies, and the study itself when the PACS holds it too)."""

    def __init__(self, spool: DicomFolderSource, base: ImagingSource | None) -> None:
        self.spool = spool
        self.base = base

    def find_series(self, patient_id: str, *, modality: str = "MR") -> list[SeriesRef]:
        refs = self.spool.find_series(patient_id, modality=modality)
        seen = {r.series_instance_uid for r in refs}
        if self.base is not None:
            try:
                more = self.base.find_series(patient_id, modality=modality)
            except PacsError as exc:  # the received study alone still scores
                log.warning("listener: PACS query failed, received files only: %s", exc)
                more = []
            refs += [r for r in more if r.series_instance_uid not in seen]
        return refs

    def retrieve_series(self, ref: SeriesRef) -> list[Dataset]:
        uids = {r.series_instance_uid for r in self.spool.find_series(ref.patient_id)}
        if ref.series_instance_uid in uids or self.base is None:
            return self.spool.retrieve_series(ref)
        return self.base.retrieve_series(ref)

    def close(self) -> None:
        self.spool.close()


class OrthancFeed:
    """Notes the MR studies of Orthanc's change feed in the spool.

    Args:
        url: Orthanc's REST root.
        auth: HTTP basic credentials, or None.
        spool: where pending studies are kept (the cursor too).
        timeout_s: HTTP timeout.
    """

    def __init__(
        self,
        url: str,
        *,
        auth: tuple[str, str] | None,
        spool: StudySpool,
        timeout_s: float = 30.0,
    ) -> None:
        self.spool = spool
        self._http = httpx.Client(base_url=url.rstrip("/"), auth=auth, timeout=timeout_s)
        self._series: dict[str, tuple[str, str, str] | None] = {}  # Orthanc series id ->

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, **params: Any) -> Any:
        try:
            r = self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise ListenerError(f"Orthanc {path}: {type(exc).__name__}") from None
        if r.status_code == 404:
            return None
        if r.status_code >= 400:
            raise ListenerError(f"Orthanc {path}: HTTP {r.status_code}")
        return r.json()

    def _series_of(self, instance_id: str) -> tuple[str, str, str] | None:
        """(modality, Study Instance UID, PatientID) of an Orthanc instance; None if gone."""
        inst = self._get(f"/instances/{instance_id}")
        if inst is None:
            return None
        sid = str(inst.get("ParentSeries", ""))
        if sid not in self._series:
            series = self._get(f"/series/{sid}")
            study = self._get(f"/studies/{series['ParentStudy']}") if series else None
            self._series[sid] = (
                (
                    str(series["MainDicomTags"].get("Modality", "")),
                    str(study["MainDicomTags"].get("StudyInstanceUID", "")),
                    str(study["PatientMainDicomTags"].get("PatientID", "")),
                )
                if series and study
                else None
            )
        return self._series[sid]

    def poll(self, now: float) -> int:
        """Read the feed from the stored cursor; returns the MR instances noted.  The first
        poll ever starts at the feed's end (history is the nightly's business)."""
        cursor = self.spool.cursor()
        if cursor is None:
            last = self._get("/changes", last="")
            self.spool.set_cursor(int(last["Last"]) if last else 0)
            return 0
        n = 0
        while True:
            page = self._get("/changes", since=cursor, limit=200) or {}
            for change in page.get("Changes", []):
                if change.get("ChangeType") != "NewInstance":
                    continue
                got = self._series_of(str(change.get("ID", "")))
                if got is None or got[0] != "MR":  # our own SEG/SR never re-trigger
                    continue
                try:
                    self.spool.note(got[1], got[2], now)
                except DicomInvalid as exc:
                    log.warning("listener: Orthanc instance %s: %s", change.get("ID"), exc)
                    continue
                n += 1
            cursor = int(page.get("Last", cursor))
            self.spool.set_cursor(cursor)  # after noting: a crash re-notes, never skips
            if page.get("Done", True):
                return n


class Listener:
    """Receives studies and scores each patient once the study is stable.

    Args:
        settings: effective settings (``[listener]``, ``[pacs]`` and the batch's).
        scorer: the scoring machinery; built from ``settings`` when omitted.
        engine: database engine; built from ``settings`` when omitted.
    """

    def __init__(
        self, settings: Settings, *, scorer: Scorer | None = None, engine: Engine | None = None
    ) -> None:
        # one patient at a time, in this process: the received files are on this machine
        self.settings = settings = settings.replace(batch__executor="local")
        cfg = settings.listener
        self.spool = StudySpool(cfg.spool_dir)
        self._owns_engine = engine is None
        self.engine = engine or make_engine(settings.database.url)
        self._owns_scorer = scorer is None
        self.scorer = scorer or Scorer.from_settings(settings)
        self.scp: StorageScp | None = None
        self.feed: OrthancFeed | None = None
        self.n_scored = 0
        self.n_failed = 0
        if cfg.mode == "orthanc":
            auth = (cfg.orthanc_username, cfg.orthanc_password) if cfg.orthanc_username else None
            self.feed = OrthancFeed(cfg.orthanc_url, auth=auth, spool=self.spool)

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> Listener:
        """Start receiving (the Storage SCP in mode "scp"; the feed's cursor otherwise).

        Raises:
            ListenerError: the SCP cannot listen, or Orthanc cannot be read.
        """
        cfg, pacs = self.settings.listener, self.settings.pacs
        if cfg.mode == "scp" and self.scp is None:
            from connectors.errors import StorageScpError

            try:
                self.scp = StorageScp(
                    cfg.ae_title,
                    cfg.port,
                    bind_address=pacs.storage_bind,
                    allowed_peers=pacs.allowed_peers,
                    receive=self._receive,
                ).start()
            except (StorageScpError, ValueError) as exc:
                raise ListenerError(f"[listener] port/ae_title: {exc}") from None
        if self.feed is not None:
            self.feed.poll(time.time())
        return self

    def close(self) -> None:
        if self.scp is not None:
            self.scp.stop()
            self.scp = None
        if self.feed is not None:
            self.feed.close()
        if self._owns_scorer:
            self.scorer.close()
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> Listener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, stop: threading.Event) -> None:
        """Poll and score until ``stop`` is set.  Nothing here stops the loop: a failure
        is logged and the study retried."""
        interval = self.settings.listener.poll_interval_s
        while not stop.is_set():
            try:
                self.tick()
            except ListenerError as exc:
                log.error("listener: %s", exc)
            stop.wait(interval)

    # -- receiving -----------------------------------------------------------------------
    def _receive(self, sop_uid: str, data: bytes, ds: Dataset) -> int:
        self.spool.add_instance(
            str(ds.get("StudyInstanceUID", "")),
            str(ds.get("PatientID", "")),
            sop_uid,
            data,
            time.time(),
        )
        return STATUS_SUCCESS

    # -- scoring -------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> list[str]:
        """Read the feed (mode "orthanc") and score every due study; returns the Study
        Instance UIDs scored."""
        if self.feed is not None:
            self.feed.poll(time.time())
        now = time.time() if now is None else now
        scored = []
        for study in self.spool.due(now, self.settings.listener.stable_seconds):
            if self.score(study):
                scored.append(study.study_uid)
        return scored

    def fhir_patient_id(self, dicom_patient_id: str) -> str:
        """The followed patient whose MRN or FHIR id the PatientID is, else the PatientID."""
        with session_scope(session_factory(self.engine)) as s:
            found = s.scalar(
                select(Patient.fhir_id)
                .where(
                    or_(Patient.identifier == dicom_patient_id, Patient.fhir_id == dicom_patient_id)
                )
                .order_by(Patient.fhir_id != dicom_patient_id)
                .limit(1)
            )
        return str(found) if found else dicom_patient_id

    def score(self, study: PendingStudy) -> bool:
        """Score the study's patient; True when done (the study left the spool)."""
        cfg = self.settings.listener
        pid = self.fhir_patient_id(study.patient_id)
        run_key = f"listen|{study.study_uid}|{int(study.first_seen)}|{self.scorer.model_version}"
        try:
            with (
                self._imaging_for(study),
                BatchRunner(self.settings, scorer=self.scorer, engine=self.engine) as runner,
            ):
                summary = runner.run(RunOptions(run_key=run_key, patient_ids=[pid], progress=False))
        except BatchError as exc:  # the nightly holds the lock: wait, do not count
            log.info("listener: study of patient %s waits: %s", pid, exc)
            self.spool.retry(study, _reason(exc), time.time() + cfg.retry_after_s, count=False)
            return False
        except Exception as exc:  # noqa: BLE001  (one study's failure never stops the listener)
            reason = _reason(exc)
        else:
            if not summary.n_failed and summary.n_done:
                self.spool.done(study)
                self.n_scored += 1
                log.info("listener: patient %s scored (run %s)", pid, summary.run_id)
                return True
            reason = summary.failures.get(pid, "scoring failed")
        self.n_failed += 1
        log.warning("listener: patient %s not scored: %s", pid, reason)
        if study.attempts + 1 >= cfg.max_attempts:
            self.spool.give_up(study, reason)
        else:
            self.spool.retry(study, reason, time.time() + cfg.retry_after_s, count=True)
        return False

    @contextmanager
    def _imaging_for(self, study: PendingStudy) -> Iterator[None]:
        """In mode "scp" the study's received files come first (the PACS may not hold
        them); in mode "orthanc" the configured source already sees the study."""
        folder = self.spool.instances_dir(study.study_uid)
        if self.settings.listener.mode != "scp" or not Path(folder).is_dir():
            yield
            return
        scorer, base, results = self.scorer, self.scorer.imaging, self.scorer.results
        first = _SpoolFirst(DicomFolderSource(folder), base)
        scorer.imaging = first
        results_base = results.imaging if results is not None else None
        if results is not None:
            results.imaging = first
        try:
            yield
        finally:
            scorer.imaging = base
            if results is not None and results_base is not None:
                results.imaging = results_base
            first.close()
