"""Faults under load, with exact counts.

Each scenario runs servers in their own processes, casts and calls from
this process, injects one fault, and then counts from the servers'
journals (files that survive a SIGKILL): every cast ran, and ran once.
"""

from __future__ import annotations

import collections
import os
import signal

import pytest

from tests.faults.load import (
    CALLS,
    IN_FLIGHT_AT_THE_FAULT,
    Load,
    assert_none_lost,
    survive_matchmaker_outage,
)
from tests.functional.helpers import unique


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
    # SIGKILL; it comes back empty (no persistence): registrations must come back too.
    survive_matchmaker_outage(load, redis_server.stop, redis_server.start, "Redis")
