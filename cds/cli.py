"""The ``mprtm`` command line: one entry point, one subcommand module per capability.

Every module in :mod:`cds.commands` exposes ``register(subparsers)``; it adds its
subcommands and sets ``handler(args, settings) -> int`` on each parser.  Settings are
loaded once here (``--config FILE`` or ``$MPRTM_CONFIG``, then ``MPRTM_*`` overrides).
A configuration or usage error exits with status 2 and a message naming the key/file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

import cds.commands
from cds import __version__
from cds.config import load_settings
from cds.errors import ConfigError, MprtmError, UsageError
from cds.logs import configure_logging

log = logging.getLogger("mprtm.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mprtm",
        description="M-PRTM heart-failure follow-up decision support.",
    )
    parser.add_argument("--version", action="version", version=f"mprtm {__version__}")
    parser.add_argument(
        "--config", metavar="FILE", default=None, help="TOML settings file (else $MPRTM_CONFIG)"
    )
    parser.add_argument("--log-format", choices=["text", "json"], default=None)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(cds.commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"cds.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"mprtm: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(
        "DEBUG" if args.verbose else settings.logging.level,
        args.log_format or settings.logging.format,
    )
    handler = getattr(args, "handler", None)
    if handler is None:  # a command group called without its subcommand
        parser.parse_args([*(argv or sys.argv[1:]), "--help"])
        return 2
    try:
        return int(handler(args, settings) or 0)
    except (ConfigError, UsageError) as exc:
        print(f"mprtm: {exc}", file=sys.stderr)
        return 2
    except MprtmError as exc:
        print(f"mprtm: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mprtm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
