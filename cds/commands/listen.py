"""``mprtm listen``: score a patient when a new LGE study arrives (``[listener]``)."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from cds.config import Settings


def register(sub: Any) -> None:
    p = sub.add_parser(
        "listen",
        help="score patients as their LGE studies arrive (Storage SCP or Orthanc changes)",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="score the studies already due (and read the change feed once), then exit",
    )
    p.set_defaults(handler=_listen)


def _listen(args: argparse.Namespace, settings: Settings) -> int:
    from cds.listener import Listener

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with Listener(settings) as listener:
        if args.once:
            listener.tick()
            return 0
        listener.run(stop)
    return 0
