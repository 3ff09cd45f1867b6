"""``mprtm serve [--host H] [--port P] [--threads N]``: the web application under waitress.

Serves :func:`cds.app.create_app` (CDS Hooks service, alert inbox, health endpoint) with
the pure-Python waitress WSGI server.  TLS is terminated by a reverse proxy in front of
it (see docs/cds-hooks.md); waitress honours ``X-Forwarded-Proto``/``-For`` only from the
proxy address given with ``--trusted-proxy``.
"""

from __future__ import annotations

import argparse
import logging
import threading
from typing import Any

from cds.config import Settings
from cds.errors import UsageError

log = logging.getLogger("mprtm.serve")


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the web application (CDS Hooks, inbox) with waitress")
    p.add_argument("--host", default=None, help="listen address (default: server.host)")
    p.add_argument("--port", type=int, default=None, help="listen port (default: server.port)")
    p.add_argument(
        "--threads", type=int, default=None, help="worker threads (default: server.threads)"
    )
    p.add_argument(
        "--trusted-proxy",
        default=None,
        metavar="ADDR",
        help="address of the TLS-terminating reverse proxy whose X-Forwarded-* headers count",
    )
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from waitress import serve

    from cds.app import create_app

    host = args.host or settings.server.host
    port = settings.server.port if args.port is None else args.port
    threads = settings.server.threads if args.threads is None else args.threads
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is not a TCP port")
    if threads < 1:
        raise UsageError("--threads must be at least 1")
    app = create_app(settings)
    scorer = app.extensions["mprtm.hooks"].engine.scorer
    if hasattr(scorer, "warm_up"):  # load the model before the first hook call needs it
        threading.Thread(target=scorer.warm_up, name="scorer-warm-up", daemon=True).start()
    kwargs: dict[str, Any] = {}
    if args.trusted_proxy:
        kwargs.update(
            trusted_proxy=args.trusted_proxy,
            trusted_proxy_headers={"x-forwarded-proto", "x-forwarded-for", "x-forwarded-host"},
            clear_untrusted_proxy_headers=True,
        )
    log.info("serving on http://%s:%d with %d threads", host, port, threads)
    serve(app, host=host, port=port, threads=threads, ident="mprtm", **kwargs)
    return 0
