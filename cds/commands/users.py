"""``mprtm users add NAME --role clinician|admin --password-stdin``."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from cds.config import Settings
from cds.db import make_engine, session_factory, session_scope
from cds.errors import UsageError
from cds.users import add_user


def register(sub: Any) -> None:
    p = sub.add_parser("users", help="local accounts of the alert inbox")
    usub = p.add_subparsers(dest="users_command", metavar="ACTION")
    usub.required = True
    add = usub.add_parser("add", help="create a user")
    add.add_argument("name")
    add.add_argument("--role", choices=["clinician", "admin"], default="clinician")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    add.set_defaults(handler=_add)


def _add(args: argparse.Namespace, settings: Settings) -> int:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("password: ")
    else:
        raise UsageError("no terminal to ask for the password: use --password-stdin")
    engine = make_engine(settings.database.url)
    with session_scope(session_factory(engine)) as session:
        user = add_user(session, args.name, args.role, password)
        print(f"created user {user.username} (role {user.role}, id {user.id})")
    engine.dispose()
    return 0
