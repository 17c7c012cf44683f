"""The notification store contract: append-only streams read by consumer groups.

A *stream* holds the notifications of one ``(exchange, topic.priority)`` in
the order they were appended. A *group* (one per listener pool, plus one for
listeners without a pool) reads every message of the stream once; the
listeners of a group share its messages. A new group starts from the oldest
retained message. A message delivered to a listener stays *pending* for its
group until acknowledged: if it is requeued, or its listener dies and it is
not acknowledged within ``redelivery`` seconds, it is delivered again to a
listener of the same group (at-least-once).

Retention is bounded by count and age per stream; messages dropped before a
group read them are reported by ``append`` so the sender can log them.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from zmqdriver.exceptions import ListingNotSupported

# What ``append`` reports for messages dropped before any group existed.
NO_LISTENER_YET = "(no listener yet)"


@dataclass(frozen=True)
class StoredNotification:
    stream: str
    id: str  # the store's own id, opaque to callers
    payload: str  # JSON text: {"ctxt": ..., "message": ...}


@dataclass(frozen=True)
class Retention:
    max_count: int
    max_age: float  # seconds


class RetentionSchedule:
    """When an append should also enforce retention: not every time.

    Enforcing costs a store more than the append itself and more as the
    stream grows (the embedded store counts the newest ``max_count`` rows
    of a full stream: 7 ms at 100,000), so it runs every ``max_count / 16``
    appends to a stream or once a second, whichever comes first: a stream
    may exceed ``max_count`` by up to a sixteenth, and small limits are
    enforced on every append.

    >>> now = [0.0]
    >>> schedule = RetentionSchedule(Retention(max_count=1_024, max_age=60), lambda: now[0])
    >>> [schedule.due("s") for _ in range(66)].count(True)  # the first, then the 64th
    2
    >>> now[0] = 1.0  # a second later: due whatever the count
    >>> schedule.due("s"), schedule.due("s")
    (True, False)
    >>> RetentionSchedule(Retention(max_count=5, max_age=60)).due("s")  # small: every time
    True
    """

    def __init__(self, retention: Retention, clock: Callable[[], float] = time.monotonic) -> None:
        self._every = max(1, retention.max_count // 16)
        self._clock = clock
        self._appends: dict[str, tuple[int, float]] = {}  # stream -> (since check, when)

    def due(self, stream: str) -> bool:
        """Count one append to ``stream``; True if it should enforce retention."""
        count, when = self._appends.get(stream, (0, -math.inf))  # a new stream: due
        now = self._clock()
        if count + 1 >= self._every or now - when >= 1.0:
            self._appends[stream] = (0, now)
            return True
        self._appends[stream] = (count + 1, when)
        return False


@dataclass(frozen=True)
class GroupBacklog:
    """What one group (pool) of one stream has not finished, for ``zmqdriver-status``."""

    stream: str
    group: str
    backlog: int  # not yet delivered, plus delivered and not acknowledged
    oldest_unread_age: float | None  # seconds; None when nothing waits
    dropped: int  # unread messages retention dropped, since the stream began


class NotificationStore(abc.ABC):
    def __init__(self, retention: Retention, redelivery: float) -> None:
        self.retention = retention
        self.redelivery = redelivery
        self.retention_schedule = RetentionSchedule(retention)

    @abc.abstractmethod
    def append(self, stream: str, payload: str) -> dict[str, int]:
        """Store ``payload`` durably at the end of ``stream``.

        Returns, per group, how many unread messages retention dropped to make
        room (an empty dict when nothing unread was dropped).
        """

    @abc.abstractmethod
    def subscribe(self, streams: list[str], group: str, consumer: str) -> None:
        """Join ``consumer`` to ``group`` on each stream.

        A group that does not exist yet is created reading from the oldest
        retained message.
        """

    def unsubscribe(self, streams: list[str], group: str, consumer: str) -> None:  # noqa: B027
        """``consumer`` leaves: what was meant for it goes to the rest of the group."""

    @abc.abstractmethod
    def read(
        self, streams: list[str], group: str, consumer: str, count: int, timeout: float
    ) -> list[StoredNotification]:
        """Up to ``count`` messages for ``consumer`` of ``group``.

        Messages due for redelivery come first, then new ones in stream order.
        Waits up to ``timeout`` seconds when there are none.
        """

    @abc.abstractmethod
    def ack(self, message: StoredNotification, group: str) -> None:
        """The group is done with ``message``; it is never delivered to it again."""

    @abc.abstractmethod
    def requeue(self, message: StoredNotification, group: str) -> None:
        """Deliver ``message`` again, soon, to some listener of ``group``."""

    def backlogs(self, prefix: str) -> list[GroupBacklog]:
        """Every group of every stream whose name starts with ``prefix``, sorted.

        For operators' tools; listeners and senders never call it. Streams
        without a group yet are listed with the group NO_LISTENER_YET.
        """
        raise ListingNotSupported(f"{type(self).__name__} cannot list its streams")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""
