"""``mprtm worker``: a Celery worker for the batch (executor = "celery")."""

from __future__ import annotations

import argparse
from typing import Any

from cds.config import Settings


def register(sub: Any) -> None:
    p = sub.add_parser("worker", help="run a Celery worker that scores batch chunks")
    p.add_argument("--concurrency", type=int, default=1, help="worker processes")
    p.add_argument("--hostname", default=None, help="worker node name (default: celery's)")
    p.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    p.set_defaults(handler=_worker)


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from cds.batch.celery_app import make_celery

    app = make_celery(settings)
    argv = [
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        str(args.concurrency),
        "--pool",
        args.pool,
    ]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    app.worker_main(argv)
    return 0
