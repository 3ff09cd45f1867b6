"""The cached expansions in the application database (table ``terminology_expansions``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError

from cds.db.models import TerminologyExpansion, utcnow
from cds.db.session import make_engine, session_factory, session_scope

log = logging.getLogger("mprtm.terminology")


def cached_expansions(
    database_url: str,
) -> dict[tuple[str, str], tuple[tuple[tuple[str, str], ...], str]]:
    """(url, version) -> ((system, code) pairs, origin text).  Empty when the database
    holds none, or cannot be read (then a warning is logged and the shipped sets apply)."""
    engine = make_engine(database_url)
    try:
        with session_scope(session_factory(engine)) as s:
            rows = s.execute(select(TerminologyExpansion)).scalars().all()
            return {
                (r.url, r.version): (
                    tuple((str(c[0]), str(c[1])) for c in r.codes),
                    f"{r.server} {r.fetched_at:%Y-%m-%d}",
                )
                for r in rows
            }
    except SQLAlchemyError as exc:
        log.warning(
            "terminology: cached expansions not read (%s); the shipped value sets apply",
            type(exc).__name__,
        )
        return {}
    finally:
        engine.dispose()


def store_expansion(
    database_url: str,
    *,
    url: str,
    version: str,
    server: str,
    codes: Iterable[tuple[str, str, str]],
) -> int:
    """Replace the cached expansion of (url, version); returns the number of codes."""
    items = [list(c) for c in codes]
    engine = make_engine(database_url)
    try:
        with session_scope(session_factory(engine)) as s:
            s.execute(
                delete(TerminologyExpansion).where(
                    TerminologyExpansion.url == url, TerminologyExpansion.version == version
                )
            )
            s.add(
                TerminologyExpansion(
                    url=url,
                    version=version,
                    server=server,
                    fetched_at=utcnow(),
                    total=len(items),
                    codes=items,
                )
            )
    finally:
        engine.dispose()
    return len(items)
