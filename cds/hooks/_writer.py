"""Write-behind of issued cards: one transaction for many requests.

Storing each card's uuid synchronously costs a commit (an fsync on SQLite) per hook call,
which under concurrent calls serialises every request on the database's write lock.  The
writer takes the rows from a queue and inserts them in batches from one thread.  Feedback
calls :meth:`IssuedCardWriter.flush` before looking cards up, so a card is always known to
the process that issued it; a crash loses at most the rows of the last batch (their
feedback is then answered "unknown card").
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from cds.db.models import IssuedCard

log = logging.getLogger("mprtm.hooks.writer")

_BATCH = 200
_LINGER_S = 0.02


class IssuedCardWriter:
    """Batches :class:`IssuedCard` inserts on a background thread.

    Args:
        sessions: session factory of the application database.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="hooks-card-writer", daemon=True)
        self._thread.start()

    def add(
        self,
        cards: Sequence[dict[str, Any]],
        service_id: str,
        fhir_id: str,
        prediction_id: int | None,
    ) -> None:
        for card in cards:
            if card.get("uuid"):
                self._queue.put(
                    {
                        "card_uuid": card["uuid"],
                        "service_id": service_id,
                        "patient_fhir_id": fhir_id,
                        "prediction_id": prediction_id,
                    }
                )

    def flush(self) -> None:
        """Return once every row queued so far is committed (or failed and logged)."""
        self._queue.join()

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._queue.task_done()
                return
            rows = [first]
            try:
                while len(rows) < _BATCH:
                    nxt = self._queue.get(timeout=_LINGER_S)
                    if nxt is None:
                        self._queue.task_done()
                        self._queue.put(None)
                        break
                    rows.append(nxt)
            except queue.Empty:
                pass
            try:
                with self._sessions() as session, session.begin():
                    session.add_all(IssuedCard(**r) for r in rows)
            except SQLAlchemyError as exc:
                log.error("could not store %d issued cards: %s", len(rows), type(exc).__name__)
            finally:
                for _ in rows:
                    self._queue.task_done()
