"""Answering one hook call within its time budget.

Order of preference:

1. the newest nightly prediction (``source='batch'``) when it is younger than
   ``cds_hooks.fresh_hours``: one database read, no FHIR, no model;
2. otherwise a score computed now from the prefetch (and the FHIR server for absent keys),
   with image features only from the cache, in a worker thread the request waits for at
   most the rest of ``cds_hooks.time_budget_ms``;
3. when that cannot finish (budget spent, no usable data, no scorer, or the scorer
   already has ``2 x workers`` jobs running or waiting: load shedding) the last nightly
   result clearly labelled as not refreshed, or an info card saying why there is none.

Patient data never make the call fail: every failure of step 2 ends in step 3.  The only
non-200 answer from here is 412, when there is no earlier result and the data could be had
neither from the prefetch nor from the FHIR server: the EHR gave no FHIR access (or the
access it gave was refused by the origin policy), or ``fhirServer`` could not be reached
(CDS Hooks 2.0, "HTTP Response": 412 when the service cannot retrieve the FHIR data it
needs through prefetch or by calling the FHIR server).  Each 412 is logged with its reason.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from cds.canonical import canonical
from cds.config import Settings
from cds.db.models import ModelVersion, Prediction
from cds.hooks import store
from cds.hooks._deadline import Deadline
from cds.hooks._writer import WriteBehind
from cds.hooks.cards import CardContext, info_card, risk_card
from cds.hooks.errors import DataUnavailable, PreconditionFailed, ScoringError
from cds.hooks.prefetch import FetchLimits, GatheredData, can_fetch, gather
from cds.hooks.request import ABSENT, HookRequest
from cds.hooks.scoring import CachedImage, OnDemandScorer
from cds.hooks.services import ServiceDefinition
from cds.hooks.view import RiskView, view_from_prediction, view_from_score
from cds.scoring import checked_time, latest_cached_image
from connectors.pacs.recognition import classify_description

log = logging.getLogger("mprtm.hooks")

#: Seconds of the budget kept for building and storing the answer.
_ANSWER_RESERVE_S = 0.025


#: Stores an on-demand prediction and the cards shown for it (run by the writer thread).
SaveJob = Callable[[Session, list[dict[str, Any]]], None]


@dataclass
class _Computed:
    view: RiskView | None
    reason: str  # why there is no view
    last_lge: dt.date | None
    save: SaveJob | None = None


@dataclass
class _Answer:
    path: str  # nightly / on-demand / stale / info (for the log)
    cards: list[dict[str, Any] | None]
    prediction_id: int | None
    save: SaveJob | None = None


class HooksEngine:
    """Turns a validated :class:`HookRequest` into the response body.

    Args:
        settings: application settings.
        sessions: session factory of the application database.
        scorer: on-demand scorer, or None when this server cannot score on demand.
    """

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        scorer: OnDemandScorer | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.scorer = scorer
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, settings.cds_hooks.workers), thread_name_prefix="hooks-score"
        )
        self.writer = WriteBehind(sessions)
        # load shedding: at most `workers` scoring jobs running and `workers` waiting
        self._max_in_flight = 2 * max(1, settings.cds_hooks.workers)
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._limits = FetchLimits(
            max_bytes=settings.cds_hooks.fetch_max_bytes,
            max_resources_per_key=settings.cds_hooks.max_resources_per_key,
        )
        self._lge = settings.pacs.lge_patterns
        self._not_lge = settings.pacs.exclude_patterns

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.writer.close()

    def handle(self, service: ServiceDefinition, req: HookRequest) -> dict[str, Any]:
        hooks = self.settings.cds_hooks
        deadline = Deadline(hooks.time_budget_ms)
        now = dt.datetime.now(dt.UTC)
        with self.sessions() as session:
            preds = store.recent_batch_predictions(session, req.patient_id, limit=2)
            last_lge = store.newest_lge_study_date(session, req.patient_id)
        latest, mv = preds[0] if preds else (None, None)
        before = preds[1][0] if len(preds) > 1 else None
        ctx = CardContext(
            service_id=service.id,
            patient_id=req.patient_id,
            encounter_id=req.encounter_id,
            user_id=req.user_id,
            public_url=self.settings.server.public_url,
            headline_outcome=self.settings.alerts.outcome,
            now=now,
            last_lge_date=last_lge,
            systems=canonical(self.settings),
        )
        # a nightly run that found the inputs unchanged keeps the prediction fresh
        checked = store.as_utc(checked_time(latest)) if latest is not None else None
        age_h = (now - checked).total_seconds() / 3600 if checked is not None else None
        if latest is not None and age_h is not None and age_h <= hooks.fresh_hours:
            view = view_from_prediction(latest, mv, before)
            answer = _Answer("nightly", [risk_card(view, ctx)], latest.id)
        else:
            answer = self._not_fresh(service, req, deadline, now, ctx, latest, mv, before)
        out = [c for c in answer.cards if c is not None]
        self.writer.submit(self._record_job(answer, out, service.id, req.patient_id))
        log.info(
            "hook %s patient=%s path=%s cards=%d ms=%.0f",
            service.id,
            req.patient_id,
            answer.path,
            len(out),
            1000 * deadline.elapsed_s(),
        )
        return {"cards": out}

    @staticmethod
    def _record_job(
        answer: _Answer, cards: list[dict[str, Any]], service_id: str, patient_id: str
    ) -> Callable[[Session], None]:
        save = answer.save
        if save is not None:
            return lambda session: save(session, cards)
        pid = answer.prediction_id
        return lambda session: store.add_issued(session, cards, service_id, patient_id, pid)

    def _not_fresh(
        self,
        service: ServiceDefinition,
        req: HookRequest,
        deadline: Deadline,
        now: dt.datetime,
        ctx: CardContext,
        latest: Prediction | None,
        mv: ModelVersion | None,
        before: Prediction | None,
    ) -> _Answer:
        nothing_sent = all(req.prefetch_value(p.key) is ABSENT for p in service.prefetch)
        if self.scorer is None:
            reason = "on-demand scoring is not available on this server"
        elif nothing_sent and not can_fetch(req):
            reason = "the EHR sent no prefetch data and no FHIR access"
            if latest is None:
                log.warning("412 for patient=%s: %s", req.patient_id, reason)
                raise PreconditionFailed(
                    "no prefetch data and no usable fhirServer/fhirAuthorization to fetch "
                    f"them: cannot score patient {req.patient_id}"
                )
        elif not self._admit():
            reason = "the on-demand scorer is busy with other calls"
        else:
            future = self._pool.submit(self._compute, service, req, deadline, now, latest)
            future.add_done_callback(self._release)
            try:
                computed = self._wait(future, deadline, req.patient_id)
            except PreconditionFailed as exc:
                log.warning("412 for patient=%s: %s", req.patient_id, exc)
                if latest is None:
                    raise
                computed = _Computed(None, str(exc), None)
            if computed.last_lge and (
                ctx.last_lge_date is None or computed.last_lge > ctx.last_lge_date
            ):
                ctx = dataclasses.replace(ctx, last_lge_date=computed.last_lge)
            if computed.view is not None:
                computed.view.patient_id = req.patient_id
                return _Answer("on-demand", [risk_card(computed.view, ctx)], None, computed.save)
            reason = computed.reason
        return self._fallback(reason, ctx, latest, mv, before)

    def _wait(self, future: Future[_Computed], deadline: Deadline, patient_id: str) -> _Computed:
        budget_ms = self.settings.cds_hooks.time_budget_ms
        try:
            return future.result(timeout=deadline.remaining_s(_ANSWER_RESERVE_S))
        except FutureTimeout:
            if not future.cancel():  # still running: keep its result when it comes
                future.add_done_callback(self._store_late)
            return _Computed(None, f"on-demand scoring did not finish within {budget_ms} ms", None)
        except PreconditionFailed:
            raise
        except (DataUnavailable, ScoringError) as exc:
            return _Computed(None, str(exc), None)
        except Exception as exc:  # noqa: BLE001 - the protocol edge: patient data never give a 500
            log.error(
                "on-demand scoring failed for patient=%s: %s",
                patient_id,
                type(exc).__name__,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            return _Computed(None, f"on-demand scoring failed ({type(exc).__name__})", None)

    def _admit(self) -> bool:
        """Take a scoring slot; False when enough jobs are already running or waiting
        (under overload a call is answered at once from what is known, not queued)."""
        with self._in_flight_lock:
            if self._in_flight >= self._max_in_flight:
                return False
            self._in_flight += 1
            return True

    def _release(self, _future: Future[_Computed]) -> None:
        with self._in_flight_lock:
            self._in_flight -= 1

    def _store_late(self, future: Future[_Computed]) -> None:
        """A score that finished after its request gave up is stored all the same."""
        if future.cancelled() or future.exception() is not None:
            return
        save = future.result().save
        if save is not None:
            self.writer.submit(lambda session: save(session, []))

    def _fallback(
        self,
        reason: str,
        ctx: CardContext,
        latest: Prediction | None,
        mv: ModelVersion | None,
        before: Prediction | None,
    ) -> _Answer:
        if latest is not None:
            view = view_from_prediction(latest, mv, before, stale=True, stale_reason=reason)
            view.patient_id = ctx.patient_id
            return _Answer("stale", [risk_card(view, ctx)], latest.id)
        detail = (
            f"No M-PRTM risk could be given for this patient now: {reason}.\n\n"
            "The patient has no nightly result yet. The risk will appear after the next "
            "nightly follow-up run, or on a later call when the data are available."
        )
        card = info_card("HF 1-year risk not available for this patient", detail, ctx)
        return _Answer("info", [card], None)

    # -- runs in a worker thread -------------------------------------------------------

    def _compute(
        self,
        service: ServiceDefinition,
        req: HookRequest,
        deadline: Deadline,
        now: dt.datetime,
        latest: Prediction | None,
    ) -> _Computed:
        assert self.scorer is not None
        data = gather(req, service, deadline, self._limits)
        last_lge = self._record_lge_date(data)
        if not data.patient_found and data.n_resources == 0:
            if data.fhir_unreachable:
                raise PreconditionFailed(
                    "nothing was prefetched and fhirServer could not be reached "
                    f"({'; '.join(data.record.warnings[:3])}): cannot score patient "
                    f"{req.patient_id}"
                )
            raise DataUnavailable("the EHR has no usable data for this patient")
        info = self.scorer.info()  # loads the model on first use (off the request thread)
        usable_img = self._cached_image(req.patient_id, info.image_cache_key)
        score = self.scorer.score(data.record, usable_img, now)
        patient_id, service_id = req.patient_id, service.id

        def save(session: Session, cards: list[dict[str, Any]]) -> None:
            row = store.save_on_demand(session, patient_id, score, info, now)
            store.add_issued(session, cards, service_id, patient_id, row.id)

        view = view_from_score(
            score,
            info,
            now,
            data.record,
            latest,
            None,
            [*_key_notes(data), *data.record.warnings],
        )
        return _Computed(view, "", last_lge, save)

    def _cached_image(self, patient_id: str, key: str) -> CachedImage | None:
        if not key:
            return None
        with self.sessions() as session:
            return latest_cached_image(session, patient_id, key)

    def _record_lge_date(self, data: GatheredData) -> dt.date | None:
        """Newest prefetched ImagingStudy holding an LGE series, by the PACS classifier on
        what ImagingStudy gives: each series' description and modality (and the study's
        description)."""
        best: dt.date | None = None
        for study in data.record.imaging_studies:
            named = [
                (s.description or "", (s.modality.code if s.modality else None) or "")
                for s in study.series or []
            ]
            named.append((study.description or "", ""))
            if not any(self._is_lge(d, m) for d, m in named if d):
                continue
            started = study.started
            day = started.date() if isinstance(started, dt.datetime) else None
            if day and (best is None or day > best):
                best = day
        return best

    def _is_lge(self, description: str, modality: str) -> bool:
        kind = classify_description(
            description, modality=modality, include=self._lge, exclude=self._not_lge
        )
        return kind.is_lge


def _key_notes(data: GatheredData) -> list[str]:
    missing = data.missing_keys()
    return [f"not available: {', '.join(missing)}"] if missing else []
