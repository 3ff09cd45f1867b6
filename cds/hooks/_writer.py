"""Write-behind of what a hook call records: issued cards and on-demand predictions.

A commit per hook call (an fsync on SQLite) serialises concurrent calls on the database's
write lock.  Calls hand small write jobs (``fn(session)``) to one thread, which runs a
batch of them in one transaction; if that transaction fails, each job is retried in its
own, so one bad row never loses the others.  Feedback calls :meth:`WriteBehind.flush`
before looking cards up, so a card is always known to the process that issued it; a crash
loses at most the last batch (feedback for those cards is answered "unknown card").
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("mprtm.hooks.writer")

Job = Callable[[Session], None]
_BATCH = 200
_LINGER_S = 0.02


class WriteBehind:
    """Runs write jobs in batches on a background thread.

    Args:
        sessions: session factory of the application database.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="hooks-writer", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def flush(self) -> None:
        """Return once every job submitted so far has been run (committed or logged)."""
        self._queue.join()

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                self._queue.task_done()
                return
            jobs = [first]
            try:
                while len(jobs) < _BATCH:
                    nxt = self._queue.get(timeout=_LINGER_S)
                    if nxt is None:
                        self._queue.task_done()
                        stop = True
                        break
                    jobs.append(nxt)
            except queue.Empty:
                pass
            try:
                self._commit(jobs)
            except SQLAlchemyError:
                for job in jobs:  # find the bad one; keep the rest
                    try:
                        self._commit([job])
                    except SQLAlchemyError as exc:
                        log.error("hooks write job failed: %s", type(exc).__name__)
            finally:
                for _ in jobs:
                    self._queue.task_done()

    def _commit(self, jobs: list[Job]) -> None:
        with self._sessions() as session, session.begin():
            for job in jobs:
                job(session)
