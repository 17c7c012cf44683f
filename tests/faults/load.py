"""Load for fault tests: casts and calls flowing while a fault hits, counted from journals.

Servers append every tag they run to a journal file (which survives a
SIGKILL); casts are tagged ``c<i>`` and calls ``k<i>``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
from collections.abc import Callable
from pathlib import Path

import oslo_messaging

from harness.wait import wait_until
from tests.functional import helpers
from tests.functional.helpers import client
from zmqdriver import options
from zmqdriver.exceptions import ServerLost

CASTS = 2000
CALLS = 500


def _default_window() -> int:
    (opt,) = [opt for opt in options.list_opts()[0][1] if opt.name == "zmq_cast_window"]
    return opt.default


class Load:
    """Casts and calls flowing to one topic from two threads while a fault hits."""

    def __init__(
        self, deployment, topic: str, journal_dir: Path, casts: int = CASTS, calls: int = CALLS
    ) -> None:
        self.deployment = deployment
        self.topic = topic
        self.journal_dir = journal_dir
        self.casts = casts
        self.calls = calls
        self.transport = deployment.transport()
        self.casts_sent = 0
        self.call_results: collections.Counter = collections.Counter()
        self.calls_lost: list[str] = []  # tags of calls that got ServerLost
        self.halfway = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(2)

    def server(self, name: str, mode: str = "threading"):
        journal = str(self.journal_dir / f"{name}.journal")
        log_file = str(self.journal_dir / f"{name}.log")
        return helpers.ServerProcess(
            self.deployment.config_file,
            self.topic,
            name,
            mode=mode,
            journal=journal,
            log_file=log_file,
        )

    def journal(self, name: str) -> list[str]:
        """The tags server ``name`` has run so far, in order."""
        path = self.journal_dir / f"{name}.journal"
        return path.read_text().split() if path.exists() else []

    def server_log(self, name: str) -> str:
        path = self.journal_dir / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def start(self) -> None:
        self._casting = self._pool.submit(self._cast_all)
        self._calling = self._pool.submit(self._call_all)

    def _cast_all(self) -> None:
        caster = client(self.transport, self.topic)
        for i in range(self.casts):
            caster.cast({}, "record", tag=f"c{i}")
            self.casts_sent += 1
            if i == self.casts // 4:
                self.halfway.set()

    def _call_all(self) -> None:
        caller = client(self.transport, self.topic, timeout=20)
        for i in range(self.calls):
            try:
                assert caller.call({}, "record", tag=f"k{i}") is None
                self.call_results["ok"] += 1
            except ServerLost:  # accepted by the server that died: outcome unknown
                self.call_results["server lost"] += 1
                self.calls_lost.append(f"k{i}")
            except oslo_messaging.MessagingTimeout:
                self.call_results["timeout"] += 1

    def finish(self) -> None:
        self._casting.result(300)
        self._calling.result(300)
        self._pool.shutdown()

    def executions(self) -> collections.Counter:
        counts: collections.Counter = collections.Counter()
        for journal in self.journal_dir.glob("*.journal"):
            counts.update(self.journal(journal.stem))
        return counts

    def cast_executions(self) -> collections.Counter:
        return collections.Counter(
            {tag: n for tag, n in self.executions().items() if tag.startswith("c")}
        )

    def call_executions(self) -> collections.Counter:
        return collections.Counter(
            {tag: n for tag, n in self.executions().items() if tag.startswith("k")}
        )

    def wait_for_every_cast(self) -> collections.Counter:
        wait_until(
            lambda: len(self.cast_executions()) >= self.casts, timeout=120, what="every cast"
        )
        return self.cast_executions()

    def close(self) -> None:
        self.transport.cleanup()


# A server killed (or frozen) after it ran a cast, before its DONE reached the
# sender, cannot tell anyone: the sender resends the cast, which then runs
# twice. Without shared durable state no driver can close that window (not
# resending would lose every accepted cast not yet run instead). The sender
# keeps at most zmq_cast_window casts on their way to one server, so at most
# that many can be in this state.
IN_FLIGHT_AT_THE_FAULT = _default_window()


def assert_none_lost(
    executions: collections.Counter, may_repeat: int = 0, casts: int = CASTS
) -> None:
    expected = {f"c{i}" for i in range(casts)}
    missing = expected - set(executions)
    duplicated = {tag: n for tag, n in executions.items() if n > 1}
    print(f"casts ran twice: {len(duplicated)} (bound {may_repeat})")  # seen with -s
    assert not missing, f"{len(missing)} casts lost, e.g. {sorted(missing)[:5]}"
    assert set(executions) == expected, "only the casts sent ran"
    assert len(duplicated) <= may_repeat, f"{len(duplicated)} casts ran twice: {duplicated}"


def survive_matchmaker_outage(
    load: Load, take_down: Callable[[], None], bring_back: Callable[[], None], what: str
) -> None:
    """Two servers under load while the matchmaker goes down and comes back.

    Clients keep sending to the servers they know while it is down; afterwards
    nothing is lost, every call returned, and both servers are registered again
    without a restart.
    """
    servers = [load.server("s1"), load.server("s2")]
    try:
        load.start()
        assert load.halfway.wait(120)
        take_down()
        sent = load.casts_sent
        wait_until(lambda: load.casts_sent >= sent + 200, what=f"casts while {what} is down")
        bring_back()
        load.finish()
        assert_none_lost(load.wait_for_every_cast())
        assert load.call_results == collections.Counter(ok=load.calls)
        fresh = load.deployment.transport()
        try:
            caller = client(fresh, load.topic, timeout=30)
            wait_until(
                lambda: {caller.call({}, "whoami") for _ in range(6)} == {"s1", "s2"},
                timeout=30,
                what="both servers registered again",
            )
        finally:
            fresh.cleanup()
    finally:
        load.close()
        for server in servers:
            server.stop()
