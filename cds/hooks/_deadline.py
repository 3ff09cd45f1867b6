"""A per-request time budget."""

from __future__ import annotations

import time


class Deadline:
    """Milliseconds left of a budget that started at construction.

    Args:
        budget_ms: the whole budget.
    """

    def __init__(self, budget_ms: float) -> None:
        self.budget_s = max(0.0, budget_ms / 1000.0)
        self._start = time.monotonic()

    def elapsed_s(self) -> float:
        return time.monotonic() - self._start

    def remaining_s(self, reserve_s: float = 0.0) -> float:
        """Seconds left, less ``reserve_s`` kept for answering; never negative."""
        return max(0.0, self.budget_s - self.elapsed_s() - reserve_s)

    def at(self, reserve_s: float = 0.0) -> float:
        """The ``time.monotonic()`` instant the budget (less ``reserve_s``) ends."""
        return self._start + self.budget_s - reserve_s

    def expired(self) -> bool:
        return self.remaining_s() <= 0.0
