"""Imaging source over DIMSE: C-ECHO, C-FIND, C-GET or C-MOVE (pynetdicom SCU).

Queries use the Study Root information model: a study-level C-FIND by PatientID
(ModalitiesInStudy, StudyDate range), then a series-level C-FIND per study (Modality).
Retrieval is C-GET on the same association (we take the Storage SCP role for MR storage
classes via SCP/SCU role selection) or C-MOVE to our own Storage SCP, which the source
starts and stops.  Every retrieved series lands in the :class:`SeriesCache` and is read
from there the next time without contacting the PACS.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

from pydicom import Dataset
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import code_to_category

from connectors.errors import DicomInvalid, PacsError, RetrieveIncomplete
from connectors.pacs._assoc import Interrupted, Peer, check_final, iter_find, run_with_association
from connectors.pacs._contexts import (
    FIND_MODEL,
    GET_MODEL,
    MOVE_MODEL,
    VERIFICATION,
    echo_contexts,
    find_contexts,
    get_contexts,
    move_contexts,
)
from connectors.pacs._scp import STATUS_SUCCESS, STATUS_UNSOLICITED, StorageScp
from connectors.pacs.base import SeriesRef
from connectors.pacs.cache import SeriesCache, StagedSeries, check_uid
from connectors.pacs.query import (
    RECOGNITION_TAGS,
    StudyRef,
    check_patient_id,
    dataset_recognition_fields,
    dataset_text,
    date_range,
    study_ref,
)

log = logging.getLogger("connectors.pacs.dimse")

T = TypeVar("T")


def _int(ds: Dataset, keyword: str) -> int:
    try:
        return int(ds.get(keyword) or 0)
    except (TypeError, ValueError):
        return 0


class DimseSource:
    """A PACS reached over DIMSE; implements ``ImagingSource``.

    Args:
        peer: the PACS, our AE title, timeouts and retry policy.
        cache: where retrieved series are kept.
        retrieve: "get" (C-GET) or "move" (C-MOVE to ``scp``).
        scp: our Storage SCP (required for "move"); started here, stopped by :meth:`close`.
    """

    def __init__(
        self,
        peer: Peer,
        cache: SeriesCache,
        *,
        retrieve: Literal["get", "move"] = "get",
        scp: StorageScp | None = None,
    ) -> None:
        if retrieve not in ("get", "move"):
            raise ValueError(f"retrieve must be 'get' or 'move', got {retrieve!r}")
        if retrieve == "move" and scp is None:
            raise ValueError("retrieve='move' needs a storage SCP (the C-MOVE destination)")
        self.peer = peer
        self.cache = cache
        self.retrieve = retrieve
        self.scp = scp
        if scp is not None and retrieve == "move":
            scp.start()

    def __enter__(self) -> DimseSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop our Storage SCP (if any)."""
        if self.scp is not None:
            self.scp.stop()

    def _run(
        self,
        contexts: list[PresentationContext],
        op: Callable[[Association], T],
        *,
        what: str,
        require: UID | None = None,
        ext_neg: list[Any] | None = None,
        handlers: list[tuple[Any, Callable[..., Any]]] | None = None,
        on_retry: Callable[[], None] | None = None,
    ) -> T:
        return run_with_association(
            self.peer,
            contexts,
            op,
            what=what,
            require=require,
            ext_neg=ext_neg,
            handlers=handlers,
            on_retry=on_retry,
        )

    # -- verification and queries ------------------------------------------------------

    def echo(self) -> None:
        """C-ECHO the PACS.

        Raises:
            AssociationError: no association after every retry.
            DimseStatusError: the PACS answered with a failure status.
        """

        def op(assoc: Association) -> None:
            check_final("C-ECHO", assoc.send_c_echo(), "echo")

        self._run(echo_contexts(), op, what="C-ECHO", require=VERIFICATION)

    def find_studies(
        self,
        patient_id: str,
        *,
        modality: str = "MR",
        date_from: dt.date | str | None = None,
        date_to: dt.date | str | None = None,
    ) -> list[StudyRef]:
        """Studies of ``patient_id`` containing ``modality`` within the date range."""
        pid = check_patient_id(patient_id)
        query = self._study_query(pid, modality, date_range(date_from, date_to))
        what = f"study C-FIND for patient {pid}"
        rows = self._run(
            find_contexts(),
            lambda a: list(iter_find(a, query, FIND_MODEL, what)),
            what=what,
            require=FIND_MODEL,
        )
        return [study_ref(pid, r) for r in rows if dataset_text(r, "PatientID") in ("", pid)]

    def find_series(
        self,
        patient_id: str,
        *,
        modality: str = "MR",
        date_from: dt.date | str | None = None,
        date_to: dt.date | str | None = None,
    ) -> list[SeriesRef]:
        """Series of ``patient_id`` of ``modality`` (study then series C-FIND, one association)."""
        pid = check_patient_id(patient_id)
        study_q = self._study_query(pid, modality, date_range(date_from, date_to))
        what = f"series C-FIND for patient {pid}"

        def op(assoc: Association) -> list[SeriesRef]:
            found: list[SeriesRef] = []
            for study in list(iter_find(assoc, study_q, FIND_MODEL, what)):
                if dataset_text(study, "PatientID") not in ("", pid):
                    continue
                st = study_ref(pid, study)
                series_q = Dataset()
                series_q.QueryRetrieveLevel = "SERIES"
                series_q.StudyInstanceUID = st.study_instance_uid
                series_q.SeriesInstanceUID = ""
                series_q.Modality = modality
                series_q.SeriesDescription = ""
                series_q.ProtocolName = ""
                series_q.NumberOfSeriesRelatedInstances = ""
                for keyword in RECOGNITION_TAGS:  # optional keys: may come back empty
                    setattr(series_q, keyword, "")
                for row in iter_find(assoc, series_q, FIND_MODEL, what):
                    if dataset_text(row, "Modality") not in ("", modality):
                        continue
                    found.append(
                        SeriesRef(
                            patient_id=pid,
                            study_instance_uid=st.study_instance_uid,
                            series_instance_uid=check_uid(
                                dataset_text(row, "SeriesInstanceUID"), "SeriesInstanceUID"
                            ),
                            modality=dataset_text(row, "Modality") or modality,
                            series_description=dataset_text(row, "SeriesDescription"),
                            protocol_name=dataset_text(row, "ProtocolName"),
                            study_date=st.study_date,
                            n_instances=_int(row, "NumberOfSeriesRelatedInstances"),
                            **dataset_recognition_fields(row),
                        )
                    )
            return found

        return list(self._run(find_contexts(), op, what=what, require=FIND_MODEL))

    def find_series_by_uid(self, series_uid: str) -> SeriesRef | None:
        """The series with this SeriesInstanceUID, or None (one SERIES-level C-FIND with
        the study and patient as return keys: a relational query, which PACS such as
        Orthanc answer)."""
        uid = check_uid(series_uid, "SeriesInstanceUID")
        q = Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.SeriesInstanceUID = uid
        for keyword in ("PatientID", "StudyInstanceUID", "StudyDate", "Modality"):
            setattr(q, keyword, "")
        for keyword in ("SeriesDescription", "ProtocolName", "NumberOfSeriesRelatedInstances"):
            setattr(q, keyword, "")
        what = f"series C-FIND for series {uid}"
        rows = self._run(
            find_contexts(),
            lambda a: list(iter_find(a, q, FIND_MODEL, what)),
            what=what,
            require=FIND_MODEL,
        )
        for row in rows:
            if dataset_text(row, "SeriesInstanceUID") != uid:
                continue
            return SeriesRef(
                patient_id=dataset_text(row, "PatientID"),
                study_instance_uid=check_uid(
                    dataset_text(row, "StudyInstanceUID"), "StudyInstanceUID"
                ),
                series_instance_uid=uid,
                modality=dataset_text(row, "Modality"),
                series_description=dataset_text(row, "SeriesDescription"),
                protocol_name=dataset_text(row, "ProtocolName"),
                study_date=dataset_text(row, "StudyDate"),
                n_instances=_int(row, "NumberOfSeriesRelatedInstances"),
            )
        return None

    @staticmethod
    def _study_query(pid: str, modality: str, dates: str) -> Dataset:
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.PatientID = pid
        q.StudyInstanceUID = ""
        q.StudyDate = dates
        q.ModalitiesInStudy = modality
        q.NumberOfStudyRelatedSeries = ""
        return q

    # -- retrieval ---------------------------------------------------------------------

    def retrieve_series(self, ref: SeriesRef) -> list[Dataset]:
        """Every instance of the series: from the cache, else by C-GET or C-MOVE.

        Raises:
            AssociationError: no association after every retry.
            DimseStatusError: the PACS refused the retrieval (status in the message).
            RetrieveIncomplete: sub-operations failed or instances are missing.
        """
        uid = check_uid(ref.series_instance_uid, "SeriesInstanceUID")
        cached = self.cache.load(uid)
        if cached is not None:
            return cached
        with self.cache.lock(uid):
            cached = self.cache.load(uid)
            if cached is not None:
                return cached
            with self.cache.stage(uid, source=f"dimse-{self.retrieve}") as staged:
                if self.retrieve == "get":
                    final = self._c_get(ref, staged)
                else:
                    final = self._c_move(ref, staged)
                self._check_complete(ref, staged, final)
        datasets = self.cache.load(uid)
        if datasets is None:
            raise PacsError(f"series {uid}: cached copy vanished right after retrieval")
        return datasets

    @staticmethod
    def _retrieve_query(ref: SeriesRef) -> Dataset:
        q = Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.StudyInstanceUID = check_uid(ref.study_instance_uid, "StudyInstanceUID")
        q.SeriesInstanceUID = ref.series_instance_uid
        return q

    def _c_get(self, ref: SeriesRef, staged: StagedSeries) -> Dataset:
        uid = staged.series_uid
        what = f"C-GET of series {uid}"

        def on_store(event: evt.Event) -> int:
            ds = event.dataset
            if str(ds.get("SeriesInstanceUID", "")) != uid:
                return STATUS_UNSOLICITED
            try:
                staged.add_bytes(str(ds.get("SOPInstanceUID", "")), event.encoded_dataset())
            except DicomInvalid as exc:
                log.warning("%s: %s", what, exc)
                return 0xC000
            except OSError as exc:
                log.error("%s: cannot write to the cache: %s", what, exc.strerror)
                return 0xA700
            return STATUS_SUCCESS

        contexts, roles = get_contexts()
        query = self._retrieve_query(ref)
        return self._run(
            contexts,
            lambda a: self._final(a.send_c_get(query, GET_MODEL), "C-GET", what),
            what=what,
            require=GET_MODEL,
            ext_neg=roles,
            handlers=[(evt.EVT_C_STORE, on_store)],
            on_retry=staged.clear,
        )

    def _c_move(self, ref: SeriesRef, staged: StagedSeries) -> Dataset:
        scp = self.scp
        if scp is None:  # guarded in __init__
            raise PacsError("C-MOVE needs our storage SCP")
        uid = staged.series_uid
        what = f"C-MOVE of series {uid} to {scp.ae_title}"
        query = self._retrieve_query(ref)
        with scp.expect(staged):
            return self._run(
                move_contexts(),
                lambda a: self._final(
                    a.send_c_move(query, scp.ae_title, MOVE_MODEL), "C-MOVE", what
                ),
                what=what,
                require=MOVE_MODEL,
                on_retry=staged.clear,
            )

    @staticmethod
    def _final(
        responses: Iterator[tuple[Dataset, Dataset | None]], service: str, what: str
    ) -> Dataset:
        final: Dataset | None = None
        for status, _identifier in responses:
            if "Status" not in status:
                raise Interrupted(f"{service}: no response (association aborted or DIMSE timeout)")
            if code_to_category(int(status.Status)) == "Pending":
                continue
            final = status
        if final is None:
            raise Interrupted(f"{service}: no final response")
        check_final(service, final, what)
        return final

    @staticmethod
    def _check_complete(ref: SeriesRef, staged: StagedSeries, final: Dataset) -> None:
        failed = _int(final, "NumberOfFailedSuboperations")
        expected = max(ref.n_instances, len(staged) + failed)
        if failed or len(staged) < expected or not len(staged):
            raise RetrieveIncomplete(
                f"series {staged.series_uid}: received {len(staged)} of {expected} instances"
                f" ({failed} failed sub-operations); not cached",
                expected=expected,
                received=len(staged),
                failed=failed,
            )
