"""``mprtm batch run`` and ``mprtm scheduler``: the nightly follow-up batch."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from cds.config import Settings
from cds.errors import UsageError


def register(sub: Any) -> None:
    p = sub.add_parser("batch", help="the follow-up batch")
    bsub = p.add_subparsers(dest="batch_command", metavar="ACTION")
    bsub.required = True
    run = bsub.add_parser("run", help="score the cohort now (resumes an unfinished run)")
    run.add_argument("--limit", type=int, default=None, help="at most N patients")
    run.add_argument("--date", default=None, help="run date YYYY-MM-DD (default: today, UTC)")
    run.add_argument("--as-of", default=None, help="clinical as-of date YYYY-MM-DD")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.set_defaults(handler=_run)
    sched = sub.add_parser("scheduler", help="run the batch on the configured cron schedule")
    sched.set_defaults(handler=_scheduler)


def _date(value: str | None, flag: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{flag}: expected YYYY-MM-DD, got {value!r}") from None


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from cds.batch.runner import BatchRunner, RunOptions

    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    as_of_date = _date(args.as_of, "--as-of")
    as_of = dt.datetime.combine(as_of_date, dt.time(23, 59), dt.UTC) if as_of_date else None
    with BatchRunner(settings) as runner:
        summary = runner.run(
            RunOptions(
                limit=args.limit,
                run_date=_date(args.date, "--date"),
                as_of=as_of,
                progress=not args.no_progress,
            )
        )
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    else:
        print(f"run {summary.run_id} ({summary.run_key}): {summary.status}")
        if summary.n_skipped_already_done == summary.n_total:
            print(
                f"  nothing to do: all {summary.n_total} patients were already done "
                f"(the run raised {summary.n_alerts} alerts)"
            )
        else:
            print(
                f"  patients {summary.n_total}: {summary.n_done} done, "
                f"{summary.n_unchanged} unchanged (checked, not scored), {summary.n_failed} failed "
                f"({summary.n_skipped_already_done} already done before this attempt); "
                f"{summary.n_new_alerts} new alerts"
            )
        if summary.n_image_unusable:
            print(
                f"  MRI could not be analysed for {summary.n_image_unusable} patients "
                "(scored without the image; reasons on each patient's page)"
            )
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in summary.timings.items())
        print(f"  time per stage: {stages}")
        for pid, reason in sorted(summary.failures.items()):
            print(f"  FAILED Patient/{pid}: {reason}")
    return 0 if summary.n_failed == 0 else 3


def _scheduler(args: argparse.Namespace, settings: Settings) -> int:
    from cds.batch.scheduler import NightlyScheduler

    NightlyScheduler(settings).start()
    return 0
