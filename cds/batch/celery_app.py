"""Celery scale-out of the batch (``[batch] executor = "celery"``).

The coordinating process (``mprtm batch run`` / the scheduler) creates the run and its
items, then sends chunks of patient ids as ``mprtm.score_chunk`` tasks; workers started
with ``mprtm worker`` (same config file, on as many machines as wanted, GPU ones
included) score them with exactly the code of the local executor and write their
results straight to the database.  Tasks are acknowledged late (a worker killed mid-chunk
gives its chunk back to the broker), retried on failure, and FHIR pulls are throttled by
a rate limit shared by all workers through Redis.  Redeliveries are harmless: an item
already ``done`` is skipped and RiskAssessments are written by identifier.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Sequence
from typing import Any, cast

from celery import Celery
from sqlalchemy import select

from cds.batch._scoring import FINISHED, ChunkResult, RunContext, Scorer
from cds.config import Settings
from cds.db import make_engine, session_factory, session_scope
from cds.db.models import BatchItem

TASK_NAME = "mprtm.score_chunk"


def _broker_url(settings: Settings) -> str:
    """``batch.broker_url`` with ``batch.broker_password`` (from the environment) put in:
    ``amqp://user@host//`` becomes ``amqp://user:<pw>@host//``, ``redis://host`` becomes
    ``redis://:<pw>@host``; a URL that already holds a password is left as it is."""
    from urllib.parse import quote

    url = settings.batch.broker_url
    pw = settings.batch.broker_password
    if not pw or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    if "@" in rest:
        userinfo, host = rest.split("@", 1)
        if ":" in userinfo:
            return url
        return f"{scheme}://{userinfo}:{quote(pw, safe='')}@{host}"
    return f"{scheme}://:{quote(pw, safe='')}@{rest}"


class SharedRateLimiter:
    """At most ``rate`` acquisitions per second across every process using one Redis.

    A fixed one-second window per key (INCR + EXPIRE); a caller over the limit sleeps to
    the next window.  Args: redis_url: Redis URL; rate: acquisitions per second.
    """

    def __init__(self, redis_url: str, rate: float, key: str = "mprtm:fhir-rate") -> None:
        import redis

        if rate <= 0:
            raise ValueError("rate must be positive")
        self.client = redis.Redis.from_url(redis_url)
        self.rate = rate
        self.key = key

    def acquire(self) -> None:
        while True:
            now = time.time()
            window = int(now)
            k = f"{self.key}:{window}"
            n = int(cast(int, self.client.incr(k)))
            if n == 1:
                self.client.expire(k, 2)
            if n <= self.rate:
                return
            time.sleep(max(0.0, window + 1 - now))


class RateLimitedSource:
    """A FHIR source whose patient pulls pass through a :class:`SharedRateLimiter`."""

    def __init__(self, inner: Any, limiter: SharedRateLimiter) -> None:
        self.inner = inner
        self.limiter = limiter

    def cohort_patient_ids(self, cohort: str) -> list[str]:
        self.limiter.acquire()
        return list(self.inner.cohort_patient_ids(cohort))

    def patient_record(self, patient_id: str, **kw: Any) -> Any:
        self.limiter.acquire()
        return self.inner.patient_record(patient_id, **kw)

    def close(self) -> None:
        self.inner.close()


def make_celery(settings: Settings) -> Celery:
    """The Celery app with the ``mprtm.score_chunk`` task bound to ``settings``."""
    broker = _broker_url(settings)
    backend = broker if broker.startswith(("redis://", "rediss://")) else "rpc://"
    app = Celery("mprtm", broker=broker, backend=backend)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        result_expires=24 * 3600,
        worker_hijack_root_logger=False,
    )
    state: dict[str, Any] = {}

    def scorer(model_version_id: int) -> Scorer:
        if state.get("model_version_id") not in (None, model_version_id):
            state.pop("scorer").close()  # a promotion since: load the run's active version
        state["model_version_id"] = model_version_id
        if "scorer" not in state:
            sc = Scorer.from_settings(settings)
            rate = settings.batch.fhir_rate_limit_per_s
            if rate > 0 and broker.startswith(("redis://", "rediss://")):
                sc.fhir = RateLimitedSource(sc.fhir, SharedRateLimiter(broker, rate))
            state["scorer"] = sc
            state["sessions"] = session_factory(make_engine(settings.database.url))
        result: Scorer = state["scorer"]
        return result

    @app.task(name=TASK_NAME, bind=True, max_retries=3, default_retry_delay=5)
    def score_chunk(
        self: Any,
        run_id: int,
        run_date: str,
        as_of: str,
        model_version_id: int,
        patient_ids: list[str],
    ) -> dict[str, Any]:
        sc = scorer(model_version_id)
        sessions = state["sessions"]
        with session_scope(sessions) as s:
            done = set(
                s.scalars(
                    select(BatchItem.patient_fhir_id).where(
                        BatchItem.run_id == run_id,
                        BatchItem.patient_fhir_id.in_(patient_ids),
                        BatchItem.status.in_(FINISHED),
                    )
                )
            )
        todo = [p for p in patient_ids if p not in done]
        ctx = RunContext(
            run_id=run_id,
            run_date=dt.date.fromisoformat(run_date),
            as_of=dt.datetime.fromisoformat(as_of),
            model_version_id=model_version_id,
        )
        try:
            res = sc.score_chunk(sessions, ctx, todo) if todo else ChunkResult()
            sc.finish()
        except Exception as exc:  # noqa: BLE001  (infrastructure failure: let Celery retry)
            raise self.retry(exc=exc) from exc
        return {
            "n_done": res.n_done,
            "n_failed": res.n_failed,
            "n_alerts": res.n_alerts,
            "n_unchanged": res.n_unchanged,
            "timings": dict(res.timings),
        }

    return app


def dispatch_chunks(
    settings: Settings, ctx: RunContext, chunks: Sequence[list[str]], progress: bool
) -> Iterator[ChunkResult]:
    """Send every chunk to the workers and yield results as they complete."""
    from tqdm import tqdm

    app = make_celery(settings)
    task = app.tasks[TASK_NAME]
    pending = [
        (
            task.apply_async(
                args=[
                    ctx.run_id,
                    ctx.run_date.isoformat(),
                    ctx.as_of.isoformat(),
                    ctx.model_version_id,
                    chunk,
                ]
            ),
            len(chunk),
        )
        for chunk in chunks
    ]
    with tqdm(
        total=sum(n for _, n in pending),
        unit="patient",
        desc="batch (celery)",
        disable=not progress,
    ) as bar:
        while pending:
            still = []
            for res, n in pending:
                if res.ready():
                    out = res.get(propagate=False)
                    if isinstance(out, dict):
                        r = ChunkResult(
                            n_done=out["n_done"],
                            n_failed=out["n_failed"],
                            n_alerts=out["n_alerts"],
                            n_unchanged=int(out.get("n_unchanged", 0)),
                        )
                        r.timings.update(out["timings"])
                        yield r
                    bar.update(n)
                else:
                    still.append((res, n))
            pending = still
            if pending:
                time.sleep(0.2)
