"""The request's database session and small shared helpers of the inbox views."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import current_app, g
from sqlalchemy.orm import Session, sessionmaker

from cds.config import Settings


def db() -> Session:
    """The request's session (opened on first use, closed at the end of the request)."""
    session = g.get("inbox_db")
    if session is None:
        factory: sessionmaker[Session] = current_app.extensions["mprtm.sessions"]
        session = factory()
        g.inbox_db = session
    return session


def close_db(_exc: BaseException | None = None) -> None:
    session = g.pop("inbox_db", None)
    if session is not None:
        session.close()


def settings() -> Settings:
    return current_app.extensions["mprtm.settings"]


def safe_next(target: Any, default: str) -> str:
    """``target`` when it is a path on this site, else ``default`` (no open redirects)."""
    if not isinstance(target, str) or not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target or any(ord(c) < 32 for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target
