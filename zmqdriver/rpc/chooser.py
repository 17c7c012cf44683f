"""Which server of a target gets a request: lookups, round robin, suspects avoided.

Calls, casts, their resends and fanout all choose here, so the rules live in
one place:

* the first answer may come from the directory's cache, later ones are
  fresh, with a growing pause between them, until the caller's deadline;
* servers that already failed this request (``tried``) are skipped; when
  every server was tried, all get another chance;
* servers that recently failed anyone (``Suspects``) are the last resort,
  and of those, servers we cannot reach now (``Suspects.unreachable``: their
  connection is down) come last;
* fanout skips unreachable servers: a copy would be refused and lost, and a
  dead server's record outlives it by up to ``zmq_target_expire``;
* the rest take turns (round robin per target);
* a matchmaker outage counts as "no server yet" (a server may register or
  the outage end before the deadline); a matchmaker that refuses us
  (credentials, configuration) raises at once.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from zmqdriver.addressing import Endpoint
from zmqdriver.backoff import Backoff
from zmqdriver.discovery import Directory
from zmqdriver.exceptions import BackendUnavailable
from zmqdriver.rpc.outbox import Suspects

# Pauses between fresh lookups while waiting for a server to register.
LOOKUP_BACKOFF = Backoff(0.05, 0.5)


class NoServer(Exception):
    """No server of a target was found in time (internal: callers turn it into
    the error their own caller expects)."""

    def __init__(self, key: str, outage: BackendUnavailable | None = None) -> None:
        super().__init__(f"no server registered under {key}")
        self.key = key
        self.outage = outage  # the matchmaker could not be asked, if that was why

    @property
    def detail(self) -> str:
        """What error messages append: the matchmaker outage, if there was one."""
        return f" (matchmaker: {self.outage})" if self.outage else ""


@dataclass(frozen=True)
class FanoutServers:
    """The servers of a fanout's target: who gets a copy, and who is skipped."""

    reachable: list[Endpoint]
    unreachable: list[Endpoint]  # registered, but our connection to them is down


class ServerChooser:
    def __init__(
        self,
        directory: Directory,
        suspects: Suspects,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._directory = directory
        self._suspects = suspects
        self._clock = clock
        self._sleep = sleep
        self._turns: dict[str, itertools.count] = {}

    def choose(
        self, key: str, tried: set[Endpoint], deadline: float, *, reachable_only: bool = False
    ) -> Endpoint:
        """A server of ``key`` not in ``tried``; waits for one until ``deadline``.

        Raises NoServer at the deadline (a deadline in the past looks once in
        the cache and once afresh). When every registered server is in
        ``tried`` it is cleared, and they are chosen again after a pause (or by
        the next call, if the deadline has passed): never in a tight loop.
        When the untried servers are all unreachable, one of them is chosen (a
        new connection may tell) or, with ``reachable_only``, NoServer is raised
        at once (a cast is held until one is reached again).
        """
        for lookup, servers in enumerate(self._lookups(key, deadline)):
            untried = [server for server in servers if server not in tried] if tried else servers
            candidates = self._healthiest(untried)
            if candidates and reachable_only and self.unreachable(candidates[0]):
                raise NoServer(key)  # the healthiest are unreachable only when all are
            if candidates:
                turn = self._turns.setdefault(key, itertools.count())
                return candidates[next(turn) % len(candidates)]
            if lookup and servers:
                tried.clear()  # every server failed once: give them another chance
        raise AssertionError("unreachable: _lookups ends by raising NoServer")

    def _healthiest(self, servers: list[Endpoint]) -> list[Endpoint]:
        """Those of ``servers`` neither suspect nor unreachable; else those we can reach;
        else all of them.

        A server stays unreachable after its suspicion expires while its connection
        stays down (a gone host answers no reconnection): it is not healthy then.
        """
        if not self._suspects.any():
            return servers  # the usual case, on every cast and call
        reachable = [server for server in servers if not self.unreachable(server)]
        healthy = [server for server in reachable if server not in self._suspects]
        return healthy or reachable or servers

    def every_server(self, key: str) -> list[Endpoint]:
        """Every server of ``key`` registered now (for fanout); NoServer if none."""
        for servers in self._lookups(key, self._clock()):
            if servers:
                return servers
        raise AssertionError("unreachable: _lookups ends by raising NoServer")

    def fanout_servers(self, key: str) -> FanoutServers:
        """``every_server(key)``, split by whether we can reach them now."""
        found = FanoutServers([], [])
        for server in self.every_server(key):
            (found.unreachable if self.unreachable(server) else found.reachable).append(server)
        return found

    def unreachable(self, server: Endpoint) -> bool:
        """Our connection to ``server`` is down (refused, or lost and not re-established)."""
        return self._suspects.unreachable(server)

    def registered(self, key: str) -> list[Endpoint]:
        """The servers of ``key`` the matchmaker has right now (no cache, no wait)."""
        return self._directory.endpoints(key, fresh=True)

    def failed(self, key: str) -> None:
        """A server of ``key`` failed us: the next lookup asks the matchmaker afresh."""
        self._directory.invalidate(key)

    def _lookups(self, key: str, deadline: float) -> Iterator[list[Endpoint]]:
        """The servers of ``key``, again and again, until the caller is satisfied.

        At ``deadline`` NoServer is raised, naming the last matchmaker outage.
        """
        fresh, outage = False, None
        pauses = LOOKUP_BACKOFF.delays()
        while True:
            try:
                yield self._directory.endpoints(key, fresh=fresh)
            except BackendUnavailable as exc:
                outage = exc  # an outage: keep waiting, it may end before the deadline
                yield []
            remaining = deadline - self._clock()
            if remaining <= 0:
                if fresh:
                    raise NoServer(key, outage)
                fresh = True  # the cache may be behind: one fresh look first
                continue
            self._sleep(min(next(pauses), remaining))
            fresh = True
