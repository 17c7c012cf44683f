"""One retry policy for the whole package: exponential backoff, capped.

Every place that waits before trying again (a notification the store did not
take, a server lookup that found nobody, a matchmaker refresh during an
outage, a SQLite file locked by a peer) draws its pauses from a ``Backoff``,
so the policy is stated once and tested once.

>>> list(itertools.islice(Backoff(0.1, 1.0).delays(), 6))
[0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Pauses that start at ``first`` seconds and grow by ``factor`` up to ``maximum``."""

    first: float
    maximum: float
    factor: float = 2.0

    def delays(self) -> Iterator[float]:
        """The pauses, for ever: first, first * factor, ..., maximum, maximum, ..."""
        delay = self.first
        while True:
            yield min(delay, self.maximum)
            delay = min(delay * self.factor, self.maximum)


def call_with_retry(
    operation: Callable[[], T],
    *,
    retry_on: tuple[type[BaseException], ...],
    backoff: Backoff,
    retries: int | None,
    on_retry: Callable[[BaseException, float], None] = lambda error, delay: None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``operation()``, tried again after each ``retry_on`` error, at most ``retries`` times.

    ``retries`` None (or negative, oslo's spelling) retries for ever. The last
    error is raised when the retries are spent. ``on_retry(error, delay)`` is
    called before each pause (to log it).
    """
    limit = None if retries is None or retries < 0 else retries
    delays = None  # made at the first failure: most calls succeed at once, on hot paths
    for attempt in itertools.count():
        try:
            return operation()
        except retry_on as error:
            if limit is not None and attempt >= limit:
                raise
            if delays is None:
                delays = backoff.delays()
            delay = next(delays)
            on_retry(error, delay)
            sleep(delay)
    raise AssertionError("unreachable: itertools.count() does not end")
