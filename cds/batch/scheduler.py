"""``mprtm scheduler``: the nightly batch on a cron schedule (APScheduler 3).

- cron and time zone from ``[batch] schedule`` / ``timezone``; a 6-field expression
  (``second minute hour day month weekday``) is accepted for tests and tight schedules;
- misfire grace, coalescing and one instance at a time within a process;
- across processes, each tick is claimed once: the run key is the tick's scheduled time,
  the batch lock keeps two processes from running at once, and a tick whose run is already
  finished is not run again by a second scheduler;
- SIGTERM/SIGINT shut the scheduler down cleanly (a running batch finishes its chunk).
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
from types import FrameType
from zoneinfo import ZoneInfo

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import select

from cds.batch.runner import BatchError, BatchRunner, RunOptions
from cds.config import Settings
from cds.db import session_scope
from cds.db.models import BatchRun
from cds.errors import ConfigError

log = logging.getLogger("mprtm.scheduler")


def make_trigger(expr: str, timezone: str) -> CronTrigger:
    """A CronTrigger from a 5-field crontab or a 6-field (seconds first) expression."""
    try:
        tz = ZoneInfo(timezone)
    except Exception as exc:  # noqa: BLE001  (zoneinfo raises several types)
        raise ConfigError(f"batch.timezone: unknown time zone {timezone!r}") from exc
    fields = expr.split()
    try:
        if len(fields) == 5:
            return CronTrigger.from_crontab(expr, timezone=tz)
        if len(fields) == 6:
            sec, minute, hour, day, month, dow = fields
            return CronTrigger(
                second=sec,
                minute=minute,
                hour=hour,
                day=day,
                month=month,
                day_of_week=dow,
                timezone=tz,
            )
    except ValueError as exc:
        raise ConfigError(f"batch.schedule: invalid cron expression {expr!r}: {exc}") from exc
    raise ConfigError(f"batch.schedule: expected 5 or 6 cron fields, got {expr!r}")


def latest_tick(trigger: CronTrigger, now: dt.datetime, grace_s: int) -> dt.datetime | None:
    """The most recent scheduled time at or before ``now`` (within the misfire grace)."""
    start = now - dt.timedelta(seconds=max(grace_s, 1))
    tick = None
    nxt = trigger.get_next_fire_time(None, start)
    while nxt is not None and nxt <= now:
        tick = nxt
        nxt = trigger.get_next_fire_time(nxt, nxt + dt.timedelta(microseconds=1))
    return tick


class NightlyScheduler:
    """Args:
    settings: effective settings (``[batch]`` section).
    runner: the batch runner; built from settings when omitted.
    """

    def __init__(self, settings: Settings, runner: BatchRunner | None = None) -> None:
        self.settings = settings
        self.runner = runner or BatchRunner(settings)
        self.trigger = make_trigger(settings.batch.schedule, settings.batch.timezone)
        self.scheduler = BlockingScheduler(timezone=ZoneInfo(settings.batch.timezone))
        self.scheduler.add_job(
            self.tick,
            self.trigger,
            id="nightly-batch",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=settings.batch.misfire_grace_s,
            replace_existing=True,
        )
        self._stopping = threading.Event()

    def tick(self) -> None:
        """One scheduled firing: run the batch for this tick unless it already ran."""
        now = dt.datetime.now(ZoneInfo(self.settings.batch.timezone))
        tick = latest_tick(self.trigger, now, self.settings.batch.misfire_grace_s) or now
        run_key = f"tick:{self.settings.batch.cohort}:{tick.astimezone(dt.UTC).isoformat()}"
        with session_scope(self.runner.sessions) as s:
            done = s.scalar(
                select(BatchRun.id).where(
                    BatchRun.run_key == run_key, BatchRun.status.like("completed%")
                )
            )
        if done is not None:
            log.info("tick %s already ran (run %s); skipping", run_key, done)
            return
        try:
            summary = self.runner.run(
                RunOptions(run_key=run_key, run_date=tick.date(), progress=False)
            )
            log.info("tick %s: run %s %s", run_key, summary.run_id, summary.status)
        except BatchError as exc:
            log.info("tick %s not run here: %s", run_key, exc)
            return
        if self.settings.monitoring.after_nightly:
            from cds.monitor import check

            try:
                with session_scope(self.runner.sessions) as s:
                    check(s, self.settings, run_id=summary.run_id)
            except Exception:  # a failed check must not stop the scheduler
                log.exception("tick %s: monitoring failed", run_key)
        if self.settings.retention.after_nightly:
            from cds.retention import purge

            try:
                purge(self.settings, self.runner.sessions)
            except Exception:  # a failed purge must not stop the scheduler
                log.exception("tick %s: retention purge failed", run_key)

    def start(self) -> None:
        """Block until SIGTERM/SIGINT."""

        def _stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %s: shutting the scheduler down", signum)
            self._stopping.set()
            self.scheduler.shutdown(wait=False)

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        # Load the model and open the sources now: a bad checkpoint or source fails at
        # start, not at 2 a.m., and the first tick does not pay the start-up time.
        _ = self.runner.scorer
        log.info(
            "scheduler started: cron %r (%s), cohort %r",
            self.settings.batch.schedule,
            self.settings.batch.timezone,
            self.settings.batch.cohort,
        )
        try:
            self.scheduler.start()
        finally:
            self.runner.close()
        log.info("scheduler stopped")
