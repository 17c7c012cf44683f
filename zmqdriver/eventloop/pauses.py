"""Noticing that this process did not run for a while: frozen, stopped or starved.

A process can stop without dying: SIGSTOP, a container frozen by its
orchestrator, a VM paused for a snapshot, a host swapping hard. Its peers
cannot tell that from death: after ``zmq_heartbeat_timeout`` (or
``rpc_ack_timeout_base`` without an ACK) a sender sends what it had
sent here to another server. When this process runs again, those requests
may still wait in its sockets or its executor's queue; running them would
run them twice. The server asks this watch whether a pause happened since a
request arrived, and refuses the request if so (see ``rpc/server.py``).

The I/O loop calls ``awake`` every time it runs and never sleeps longer than
half the threshold. A gap between two calls that exceeds what the loop chose
to sleep by more than half the threshold means the process was not running;
since a pause during a sleep hides at most that sleep, every pause longer
than ``threshold`` is seen, and none shorter than half of it. The loop
reports a pause *before* it reads anything that waited through it.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class PauseWatch:
    """Counts the pauses of this process longer than ``threshold`` seconds.

    ``awake`` runs in the loop thread only; ``generation`` and ``stalled``
    are read from any thread (a float and an int: atomic reads).
    """

    def __init__(self, threshold: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.generation = 0  # how many pauses so far
        self._clock = clock
        self._last = clock()
        self._listeners: list[Callable[[float], None]] = []

    @property
    def longest_sleep(self) -> float:
        """The longest the loop may sleep, so that an idle loop still notices pauses."""
        return self.threshold / 2

    def subscribe(self, on_pause: Callable[[float], None]) -> None:
        """``on_pause(seconds)`` runs in the loop thread after each pause."""
        self._listeners.append(on_pause)

    def awake(self, slept: float = 0.0) -> None:
        """The loop runs again, having chosen to sleep ``slept`` seconds."""
        now = self._clock()
        lost = now - self._last - slept
        paused = lost > self.threshold / 2
        # The generation moves before _last: a thread asking paused_since in
        # between sees the new generation, or else the old _last as stalled.
        if paused:
            self.generation += 1
        self._last = now
        if paused:
            for on_pause in self._listeners:
                on_pause(lost)

    def stalled(self) -> bool:
        """The loop has not run for longer than the threshold (a pause it has yet to see).

        Another thread that resumed first (an executor thread) asks this
        before it starts a request: the loop may not have noticed yet.
        """
        return self._clock() - self._last > self.threshold

    def paused_since(self, generation: int) -> bool:
        """A pause happened after ``generation`` was read, or is happening now."""
        return self.generation != generation or self.stalled()


def pause_threshold(
    ack_timeout: float, heartbeat_interval: float, heartbeat_timeout: float
) -> float:
    """The pause that matters: half the shortest time after which senders give up on a server.

    A sender resends what a server holds after ``rpc_ack_timeout_base``
    without an ACK, or after ``zmq_heartbeat_timeout`` without heartbeats
    (when heartbeats are on). A pause shorter than half of that cannot
    have made anyone resend.

    >>> pause_threshold(5.0, 1.0, 3.0)
    1.5
    >>> pause_threshold(5.0, 0.0, 3.0)  # no heartbeats: only the ACK timeout
    2.5
    """
    limits = [ack_timeout]
    if heartbeat_interval > 0:
        limits.append(heartbeat_timeout)
    return min(limits) / 2
