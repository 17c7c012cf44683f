"""Faults under load, with exact counts.

Each scenario runs servers in their own processes, casts and calls from
this process, injects one fault, and then counts from the servers'
journals (files that survive a SIGKILL): every cast ran, and ran once.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import signal
import threading
from pathlib import Path

import oslo_messaging
import pytest

from harness.wait import wait_until
from tests.functional.helpers import client, unique
from zmqdriver import options
from zmqdriver.exceptions import ServerLost

CASTS = 2000
CALLS = 500


def _default_window() -> int:
    (opt,) = [opt for opt in options.list_opts()[0][1] if opt.name == "zmq_cast_window"]
    return opt.default


class Load:
    """Casts and calls flowing to one topic from two threads while a fault hits."""

    def __init__(self, deployment, topic: str, journal_dir: Path) -> None:
        self.deployment = deployment
        self.topic = topic
        self.journal_dir = journal_dir
        self.transport = deployment.transport()
        self.casts_sent = 0
        self.call_results: collections.Counter = collections.Counter()
        self.halfway = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(2)

    def server(self, name: str):
        journal = str(self.journal_dir / f"{name}.journal")
        return self.deployment.server(self.topic, name, journal=journal)

    def start(self) -> None:
        self._casting = self._pool.submit(self._cast_all)
        self._calling = self._pool.submit(self._call_all)

    def _cast_all(self) -> None:
        caster = client(self.transport, self.topic)
        for i in range(CASTS):
            caster.cast({}, "record", tag=f"c{i}")
            self.casts_sent += 1
            if i == CASTS // 4:
                self.halfway.set()

    def _call_all(self) -> None:
        caller = client(self.transport, self.topic, timeout=20)
        for i in range(CALLS):
            try:
                assert caller.call({}, "echo", value=i) == i
                self.call_results["ok"] += 1
            except ServerLost:  # accepted by the server that died: outcome unknown
                self.call_results["server lost"] += 1
            except oslo_messaging.MessagingTimeout:
                self.call_results["timeout"] += 1

    def finish(self) -> None:
        self._casting.result(300)
        self._calling.result(300)
        self._pool.shutdown()

    def executions(self) -> collections.Counter:
        counts: collections.Counter = collections.Counter()
        for journal in self.journal_dir.glob("*.journal"):
            counts.update(journal.read_text().split())
        return counts

    def wait_for_every_cast(self) -> collections.Counter:
        wait_until(lambda: len(self.executions()) >= CASTS, timeout=120, what="every cast")
        return self.executions()

    def close(self) -> None:
        self.transport.cleanup()


# A server killed (or frozen) after it ran a cast, before its DONE reached the
# sender, cannot tell anyone: the sender resends the cast, which then runs
# twice. Without shared durable state no driver can close that window (not
# resending would lose every accepted cast not yet run instead). The sender
# keeps at most zmq_cast_window casts on their way to one server, so at most
# that many can be in this state.
IN_FLIGHT_AT_THE_FAULT = _default_window()


def assert_none_lost(executions: collections.Counter, may_repeat: int = 0) -> None:
    expected = {f"c{i}" for i in range(CASTS)}
    missing = expected - set(executions)
    duplicated = {tag: n for tag, n in executions.items() if n > 1}
    print(f"casts ran twice: {len(duplicated)} (bound {may_repeat})")  # seen with -s
    assert not missing, f"{len(missing)} casts lost, e.g. {sorted(missing)[:5]}"
    assert set(executions) == expected, "only the casts sent ran"
    assert len(duplicated) <= may_repeat, f"{len(duplicated)} casts ran twice: {duplicated}"


@pytest.fixture
def load(deployment, tmp_path):
    load = Load(deployment, unique("faults"), tmp_path)
    yield load
    load.close()


@pytest.mark.parametrize("fault", ["sigkill", "sigstop"])
def test_a_server_dies_under_load(load, fault):
    victim, survivor = load.server("victim"), load.server("survivor")
    try:
        load.start()
        assert load.halfway.wait(120)
        # sigstop: frozen, as a hung process; it is never resumed (only killed
        # at the end), as an operator would restart it.
        os.kill(victim.proc.pid, signal.SIGKILL if fault == "sigkill" else signal.SIGSTOP)
        load.finish()
        assert_none_lost(load.wait_for_every_cast(), may_repeat=IN_FLIGHT_AT_THE_FAULT)
        assert load.call_results["timeout"] == 0, load.call_results
        # Only a call the victim had accepted may fail, and only fast.
        assert load.call_results["server lost"] <= 1, load.call_results
        assert load.call_results["ok"] + load.call_results["server lost"] == CALLS
    finally:
        victim.kill()
        survivor.stop()


def test_rolling_restart_of_three_servers_under_load(load):
    servers = {name: load.server(name) for name in ("s1", "s2", "s3")}
    try:
        load.start()
        assert load.halfway.wait(120)
        for name in list(servers):
            servers[name].stop()  # graceful: unregister, refuse new work, finish the rest
            servers[name] = load.server(name)
        load.finish()
        assert_none_lost(load.wait_for_every_cast())
        assert load.call_results == collections.Counter(ok=CALLS)
    finally:
        for server in servers.values():
            server.kill()


def test_redis_outage_and_restart_under_load(redis_deployment, redis_server, tmp_path):
    load = Load(redis_deployment, unique("faults"), tmp_path)
    servers = [load.server("s1"), load.server("s2")]
    try:
        load.start()
        assert load.halfway.wait(120)
        redis_server.stop()  # SIGKILL; it comes back empty (no persistence)
        # While Redis is down, clients keep sending to the servers they know.
        sent = load.casts_sent
        wait_until(lambda: load.casts_sent >= sent + 200, what="casts while Redis is down")
        redis_server.start()
        load.finish()
        assert_none_lost(load.wait_for_every_cast())
        assert load.call_results == collections.Counter(ok=CALLS)
        # Registrations come back (within about a second) without restarting a server.
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
