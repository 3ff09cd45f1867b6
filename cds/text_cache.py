"""The persistent segment-embedding cache: text segments embedded once, for every caller.

:class:`DbSegmentStore` keeps each segment's embedding in the ``segment_embeddings`` table
under :meth:`model.text_branch.TextEncoder.segment_key` (the encoder's weights hash, its
window, the runtime and the segment), so a medication line or a note sentence seen once by
the nightly batch, CDS Hooks or training is not run through the text encoder again, in
any process.  ``[model] segment_cache`` turns it off; ``[retention] segment_cache_days``
lets ``mprtm purge`` delete old entries (they are recomputed on need).

A failing database never fails scoring: a read that fails is a miss, a write that fails
is skipped (both logged without any text).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from cds.db import session_factory, session_scope
from cds.db.models import SegmentEmbedding

log = logging.getLogger("mprtm.text_cache")
#: keys per SELECT ... IN (...) (well under SQLite's bound-parameter limit)
_CHUNK = 500


class DbSegmentStore:
    """Segment embeddings in the application database (a :class:`model.text_branch.SegmentStore`).

    Args:
        engine: the application database.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = session_factory(engine)

    @classmethod
    def open(cls, url: str) -> DbSegmentStore | None:
        """The store of the database at ``url``, or None (logged) when that database has
        no ``segment_embeddings`` table (not migrated) or cannot be reached; a SQLite
        file that does not exist is not created."""
        from sqlalchemy import inspect
        from sqlalchemy.engine import make_url

        from cds.db import make_engine

        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            db = parsed.database or ""
            if not db or db == ":memory:" or not Path(db).is_file():
                log.info("segment cache off: no database file")
                return None
        engine = make_engine(url)
        try:
            ready = inspect(engine).has_table(SegmentEmbedding.__tablename__)
        except SQLAlchemyError as exc:
            log.info("segment cache off: database not reachable (%s)", type(exc).__name__)
            ready = False
        if not ready:
            log.info("segment cache off: the database has no segment_embeddings table")
            engine.dispose()
            return None
        return cls(engine)

    def close(self) -> None:
        """Close the database connections of this store."""
        self.engine.dispose()

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        wanted = list(dict.fromkeys(keys))
        try:
            with session_scope(self._sessions) as s:
                for i in range(0, len(wanted), _CHUNK):
                    rows = s.execute(
                        select(SegmentEmbedding.key, SegmentEmbedding.embedding).where(
                            SegmentEmbedding.key.in_(wanted[i : i + _CHUNK])
                        )
                    )
                    for key, blob in rows:
                        out[key] = np.frombuffer(blob, dtype=np.float32).copy()
        except SQLAlchemyError as exc:
            log.warning("segment cache read failed (%s): encoding instead", type(exc).__name__)
            return {}
        return out

    def put_many(self, encoder_id: str, items: Mapping[str, np.ndarray]) -> None:
        if not items:
            return
        now = dt.datetime.now(dt.UTC)
        rows = [
            {
                "key": k,
                "encoder_id": encoder_id[:64],
                "embedding": np.asarray(v, dtype=np.float32).tobytes(),
                "created_at": now,
            }
            for k, v in items.items()
        ]
        try:
            with session_scope(self._sessions) as s:
                s.execute(_insert_ignoring_duplicates(self.engine), rows)
        except SQLAlchemyError as exc:
            log.warning("segment cache write failed (%s): not kept", type(exc).__name__)


def _insert_ignoring_duplicates(engine: Engine) -> Any:
    """INSERT that leaves a key another process stored meanwhile as it is (PostgreSQL and
    SQLite, the two databases the application runs on)."""
    table = SegmentEmbedding
    if engine.dialect.name == "postgresql":
        return pg_insert(table).on_conflict_do_nothing()
    return sqlite_insert(table).on_conflict_do_nothing()
