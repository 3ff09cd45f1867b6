"""How serving processes follow the registry: the active version's checkpoint, asked for
at each run (batch, worker) or request (CDS Hooks), so that a promotion needs no restart.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import Engine, select

from cds.config import Settings
from cds.db import make_engine, session_factory, session_scope
from cds.db.models import ModelVersion


@cache
def _engine(url: str) -> Engine:
    return make_engine(url)


def active_settings(settings: Settings, engine: Engine | None = None) -> Settings:
    """``settings`` with ``model.checkpoint`` pointing at the active version's file; an
    empty registry is bootstrapped from ``[model] checkpoint`` (:func:`cds.registry.bootstrap`)."""
    from sqlalchemy.exc import IntegrityError

    from cds.registry import RegistryError, serving_settings

    sessions = session_factory(engine or _engine(settings.database.url))
    try:
        with session_scope(sessions) as s:
            return serving_settings(settings, s)
    except (IntegrityError, RegistryError):
        # another process bootstrapped the empty registry at the same moment: read its row
        with session_scope(sessions) as s:
            return serving_settings(settings, s)


def active_sha256(settings: Settings, engine: Engine | None = None) -> str | None:
    """The active version's checkpoint hash (None: no active version yet)."""
    with session_scope(session_factory(engine or _engine(settings.database.url))) as s:
        return s.scalar(
            select(ModelVersion.checkpoint_sha256).where(ModelVersion.state == "active")
        )
