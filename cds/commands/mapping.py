"""``mprtm mapping doc``: the FHIR-to-model mapping tables as Markdown."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cds.config import Settings
from cds.mapping.doc import render


def register(sub: Any) -> None:
    p = sub.add_parser("mapping", help="the FHIR-to-model mapping tables")
    msub = p.add_subparsers(dest="mapping_command", metavar="ACTION")
    msub.required = True
    d = msub.add_parser("doc", help="write docs/fhir-mapping.md from cds/data/*.csv")
    d.add_argument("--out", metavar="FILE", default=None, help="write here (default: stdout)")
    d.add_argument("--check", action="store_true", help="exit 1 when FILE differs from the tables")
    d.set_defaults(handler=_doc)


def _doc(args: argparse.Namespace, settings: Settings) -> int:
    text = render()
    if args.out is None:
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    if args.check:
        current = out.read_text(encoding="utf-8") if out.is_file() else ""
        if current != text:
            sys.stderr.write(f"{out} is out of date: run mprtm mapping doc --out {out}\n")
            return 1
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return 0
