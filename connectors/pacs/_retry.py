"""Retry policy shared by the DIMSE and DICOMweb sources and the C-STORE sender."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed association or request is tried again.

    Args:
        max_retries: attempts after the first one (0 = no retry).
        backoff_s: wait before the first retry; doubled after each further failure.
        max_backoff_s: upper bound of one wait.
    """

    max_retries: int = 3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("backoff_s and max_backoff_s must be >= 0")

    @property
    def attempts(self) -> int:
        """Total number of tries."""
        return self.max_retries + 1

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        return float(min(self.max_backoff_s, self.backoff_s * (2 ** (retry - 1))))

    def sleep(self, retry: int, at_least: float = 0.0) -> None:
        """Wait before retry number ``retry``; ``at_least`` honours a server's Retry-After."""
        time.sleep(min(self.max_backoff_s, max(self.delay(retry), at_least)))
