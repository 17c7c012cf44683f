"""One way to rate-limit repeated log lines (or anything else said about peers).

Hostile or broken peers, retrying senders and long outages repeat the same
event many times a second; the log should say it once, then how often it
happened since. Each *key* (a server, a peer, a kind of event) has its own
budget, so one noisy server does not silence news about another.

>>> clock = iter([0.0, 1.0, 2.0, 11.0]).__next__
>>> throttle = Throttle(every=10.0, clock=clock)
>>> [throttle.admit("a") for _ in range(4)]
[0, None, None, 2]
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable


class Throttle:
    """Admits one event per key every ``every`` seconds and counts the rest.

    ``every=math.inf`` admits each key once (until ``max_keys`` distinct keys
    were seen: then it forgets them all, so memory stays bounded).
    Thread-safe: the I/O loop and caller threads may share one.
    """

    def __init__(
        self,
        every: float,
        *,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._every = every
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (when last admitted, events suppressed since)
        self._state: dict[Hashable, tuple[float, int]] = {}

    def admit(self, key: Hashable = None) -> int | None:
        """None if the event should be suppressed; otherwise how many were since the last one."""
        now = self._clock()
        with self._lock:
            last, suppressed = self._state.get(key, (-math.inf, 0))
            if now - last < self._every:
                self._state[key] = (last, suppressed + 1)
                return None
            if key not in self._state and len(self._state) >= self._max_keys:
                self._state.clear()
            self._state[key] = (now, 0)
            return suppressed

    def forget(self, key: Hashable = None) -> None:
        """The next event of ``key`` is admitted at once (its condition ended)."""
        with self._lock:
            self._state.pop(key, None)
