"""``mprtm model register|list|validation|promote|retire``: the model registry
(:mod:`cds.registry`; lifecycle in ``docs/model-lifecycle.md``)."""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select

from cds.config import Settings
from cds.db import make_engine, session_factory, session_scope
from cds.db.models import ModelVersion
from cds.errors import UsageError


def register(sub: Any) -> None:
    p = sub.add_parser("model", help="model registry: register, list, promote, retire")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION")
    msub.required = True
    reg = msub.add_parser("register", help="register a checkpoint as a candidate")
    reg.add_argument("checkpoint", type=Path, metavar="CKPT")
    reg.add_argument(
        "--validation",
        type=Path,
        metavar="validation.json",
        help="store this `mprtm validate` report with it",
    )
    reg.add_argument("--reason", default="")
    reg.set_defaults(handler=_register)
    ls = msub.add_parser("list", help="every version with its state and latest validation")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=_list)
    val = msub.add_parser("validation", help="store a `mprtm validate` report for a version")
    val.add_argument("version", type=int, metavar="VERSION")
    val.add_argument("report", type=Path, metavar="validation.json")
    val.set_defaults(handler=_validation)
    pro = msub.add_parser("promote", help="move a version to shadow or active")
    pro.add_argument("version", type=int, metavar="VERSION")
    pro.add_argument("--to", required=True, choices=["shadow", "active"])
    pro.add_argument("--force", action="store_true", help="override a failed gate (audited)")
    pro.add_argument("--reason", default="")
    pro.set_defaults(handler=_promote)
    ret = msub.add_parser("retire", help="retire a candidate or shadow version")
    ret.add_argument("version", type=int, metavar="VERSION")
    ret.add_argument("--reason", default="")
    ret.set_defaults(handler=_retire)
    for q in (reg, val, pro, ret):
        q.add_argument("--actor", default=None, help="who makes the change (default: OS user)")


def _actor(args: argparse.Namespace) -> str:
    return str(args.actor or getpass.getuser())


def _report(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read validation report {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"validation report {path} is not a JSON object")
    return data


def _register(args: argparse.Namespace, settings: Settings) -> int:
    from cds import registry

    report = _report(args.validation) if args.validation else None
    engine = make_engine(settings.database.url)
    try:
        with session_scope(session_factory(engine)) as s:
            mv = registry.register(s, args.checkpoint, actor=_actor(args), reason=args.reason)
            if report is not None:
                registry.attach_validation(
                    s,
                    mv.id,
                    report,
                    limits=settings.registry,
                    actor=_actor(args),
                    source=str(args.validation),
                )
            print(f"registered {args.checkpoint} as candidate ({mv.version})")
            print(mv.id)
    finally:
        engine.dispose()
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from cds import registry

    engine = make_engine(settings.database.url)
    try:
        with session_scope(session_factory(engine)) as s:
            rows = [
                registry.version_dict(s, mv)
                for mv in s.scalars(select(ModelVersion).order_by(ModelVersion.id))
            ]
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        v = r["validation"]
        gate = "no validation" if v is None else f"AUROC CI low {v.get('auroc_ci_lower')}"
        print(f"{r['id']:>4}  {r['state']:<9}  {r['version']}  {r['created']}  {gate}")
    return 0


def _validation(args: argparse.Namespace, settings: Settings) -> int:
    from cds import registry

    report = _report(args.report)
    engine = make_engine(settings.database.url)
    try:
        with session_scope(session_factory(engine)) as s:
            row = registry.attach_validation(
                s,
                args.version,
                report,
                limits=settings.registry,
                actor=_actor(args),
                source=str(args.report),
            )
            failures = registry.gate_failures(row.summary, settings.registry)
            print(f"stored validation {row.id} for model version {args.version}")
            print("gate: passes" if not failures else "gate: fails: " + "; ".join(failures))
    finally:
        engine.dispose()
    return 0


def _promote(args: argparse.Namespace, settings: Settings) -> int:
    from cds import registry

    engine = make_engine(settings.database.url)
    try:
        with session_scope(session_factory(engine)) as s:
            mv = registry.promote(
                s,
                args.version,
                args.to,
                limits=settings.registry,
                actor=_actor(args),
                force=args.force,
                reason=args.reason,
            )
            print(f"model version {mv.id} is now {mv.state}")
    finally:
        engine.dispose()
    return 0


def _retire(args: argparse.Namespace, settings: Settings) -> int:
    from cds import registry

    engine = make_engine(settings.database.url)
    try:
        with session_scope(session_factory(engine)) as s:
            mv = registry.retire(s, args.version, actor=_actor(args), reason=args.reason)
            print(f"model version {mv.id} is now {mv.state}")
    finally:
        engine.dispose()
    return 0
