"""After the matchmaker lost its records: when servers register again, what clients send to.

Redis restarted empty (or flushed, or etcd that lost a lease) is noticed by every
server process through its generation token (``discovery.Registrar``), read when the
process's push channel comes back up (a restart breaks the subscription), every second
while there is no channel up, and every STEADY_CHECK_EVERY seconds besides
(``generation_check_due``): within about a second of each other.
Registering at once is a stampede: ~15 Redis commands per host inside a fraction of a
second (8,510 commands/s at 300 hosts, measured in doc/scaling.md). So each process
waits a delay drawn evenly from [0, ``zmq_reregister_spread``) first, and the hosts come
back at about hosts / spread per second instead.

Meanwhile the records are missing, and a fresh lookup finds only the servers that came
back already: a fanout would skip the others, a cast would wait for one of them. So a
client that has reason to think records may be missing (its watch went down or came
back, a lookup failed, its own registrar saw the loss) keeps the servers it knew before
for ``hold_for(spread)`` seconds: long enough for every server to notice, wait its turn
and register (``Holding``). Outside those windows answers pass through untouched.

>>> reregister_delay(2.0, 0.25)
0.5
>>> hold_for(2.0)
6.0
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TypeVar

E = TypeVar("E")

# A server notices a restart within a tick of the registrar (discovery._TICK) after Redis
# answers again: its channel came back up, or it polls every tick while the channel is down.
NOTICE_WITHIN = 1.0
# While the push channel is up and steady, the generation is still read this often: a loss
# without a reconnect (FLUSHALL, an etcd lease revoked by hand) breaks no channel. The
# refresh (zmq_target_update, 20 s) registers everything again anyway; this also starts the
# clients' hold and covers long refresh intervals. 1 read per host per 30 s: 333/s at 10,000.
STEADY_CHECK_EVERY = 30.0
# Beyond its delay a server needs time to register under load, and a client's watch
# reconnects after a pause of its own (watch.REOPEN_BACKOFF starts at 0.5 s).
SLACK = 3.0


def reregister_delay(spread: float, draw: float) -> float:
    """Seconds a process waits before registering again; ``draw`` is uniform in [0, 1).

    Evenly spread, so that N processes make about N / spread registrations a second.

    >>> reregister_delay(0.0, 0.9)
    0.0
    >>> reregister_delay(3.0, 0.0), reregister_delay(3.0, 0.5)
    (0.0, 1.5)
    """
    return max(0.0, spread) * draw


def generation_check_due(channel: int | None, checked: int | None, since: float) -> bool:
    """Whether a registrar reads the generation token now (it asks once a tick).

    ``channel``: how many times the process's push channel came up, None while it is
    down (or there is none); ``checked``: that count at the last read that succeeded;
    ``since``: seconds since that read. Every tick without a channel, at once when it
    came up again (it may have missed a restart), else every STEADY_CHECK_EVERY s.

    >>> generation_check_due(None, 3, 1.0)  # no channel up: poll
    True
    >>> generation_check_due(4, 3, 0.5)  # back up: what did it miss?
    True
    >>> generation_check_due(4, 4, 5.0), generation_check_due(4, 4, 30.0)  # steady
    (False, True)
    """
    if channel is None or channel != checked:
        return True
    return since >= STEADY_CHECK_EVERY


def hold_for(spread: float) -> float:
    """Seconds clients keep the servers they knew after a possible loss of records.

    The last server registers at most ``spread`` after noticing, and it notices within
    NOTICE_WITHIN of the loss.

    >>> hold_for(0.0)
    4.0
    """
    return max(0.0, spread) + NOTICE_WITHIN + SLACK


def kept(fresh: Iterable[E], known: Iterable[E]) -> list[E]:
    """A fresh answer with the servers known before the loss that it lacks, sorted.

    >>> kept([3, 1], [2, 1])
    [1, 2, 3]
    """
    return sorted(set(fresh) | set(known))


class Holding:
    """Which servers a client keeps while the matchmaker may have lost records.

    ``answer(key, fresh, now)`` is called with every answer read from the matchmaker.
    Answers read in calm times pass through and become what is known; for ``hold``
    seconds after ``suspect(now)`` they are merged with what was known before, and
    only add to it (they may lack servers that did not register again yet). Adding
    matters: a pushed answer may be read once, at a start that is itself a hold (the
    watch came up), and then kept for a minute without being read again.
    Pure bookkeeping, no I/O: the caller passes the clock. Thread-safe.
    """

    def __init__(self, hold: float) -> None:
        self._hold = hold
        self._until = float("-inf")
        self._known: dict[str, list] = {}
        self._lock = threading.Lock()

    def suspect(self, now: float) -> None:
        """Records may be missing from now on (the loss itself may be a while back)."""
        if self._hold > 0:
            with self._lock:
                self._until = max(self._until, now + self._hold)

    def holding(self, now: float) -> bool:
        return now < self._until

    def answer(self, key: str, fresh: list[E], now: float) -> list[E]:
        """``fresh`` in calm times (and learnt); merged with the known servers while holding.

        ``fresh`` itself when it lacks none of them, so the caller can tell what it got
        is the matchmaker's own answer.
        """
        with self._lock:
            if now >= self._until:
                self._known[key] = fresh
                return fresh
            known = self._known.get(key, [])
            if set(known) <= set(fresh):
                self._known[key] = fresh
                return fresh
            self._known[key] = merged = kept(fresh, known)
            return merged
