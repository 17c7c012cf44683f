"""RPC through oslo.messaging's public API, with servers in other processes.

Every test runs on the embedded matchmaker (zmq://) and on Redis; the shared
cluster runs its servers under the threading executor and under eventlet.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import subprocess
import time

import oslo_messaging
import pytest

from harness import green
from harness.wait import wait_until
from tests.functional import helpers
from tests.functional.helpers import client, unique
from zmqdriver.exceptions import ServerLost

# -- a cluster shared by the tests of this module -------------------------------------


class Cluster:
    """Servers s1, s2 on exchange ex_a and s3 on ex_b, all on one topic."""

    def __init__(self, deployment, mode: str) -> None:
        self.deployment = deployment
        self.mode = mode
        self.topic = unique("topic")
        self.servers = {}
        try:
            for name, exchange in (("s1", "ex_a"), ("s2", "ex_a"), ("s3", "ex_b")):
                self.servers[name] = deployment.server(self.topic, name, exchange, mode)
            self.transport = deployment.transport()
        except BaseException:
            self.kill()
            raise

    def client(self, server=None, exchange="ex_a", fanout=False, **kwargs):
        kwargs.setdefault("timeout", 30)
        return client(self.transport, self.topic, server, exchange, fanout, **kwargs)

    def recorded(self, server: str, prefix: str) -> list:
        exchange = "ex_b" if server == "s3" else "ex_a"
        return self.client(server, exchange).call({}, "recorded", prefix=prefix)

    def stop(self) -> None:
        self.transport.cleanup()
        for server in self.servers.values():
            server.stop()

    def kill(self) -> None:
        for server in self.servers.values():
            server.kill()


@pytest.fixture(scope="module", params=["threading", "eventlet"])
def cluster(request, shared_deployment):
    cluster = Cluster(shared_deployment, request.param)
    try:
        yield cluster
        cluster.stop()
    finally:
        cluster.kill()


def test_call_returns_reply(cluster):
    assert cluster.client().call({}, "echo", value={"a": [1, 2.5, "x"]}) == {"a": [1, 2.5, "x"]}


def test_context_travels_with_the_call(cluster):
    assert cluster.client().call({"user": "alice", "n": 3}, "context") == {"user": "alice", "n": 3}


def test_builtin_remote_exception_is_reraised(cluster):
    with pytest.raises(ValueError, match="negative balance"):
        cluster.client().call({}, "fail", message="negative balance")


def test_custom_remote_exception_needs_allowed_module(cluster):
    with pytest.raises(oslo_messaging.RemoteError) as info:
        cluster.client().call({}, "fail_custom", message="out of stock")
    assert info.value.exc_type == "InventoryError"

    allowed = cluster.deployment.transport(allowed_remote_exmods=["tests.functional.remote_errors"])
    try:
        from tests.functional.remote_errors import InventoryError

        with pytest.raises(InventoryError, match="out of stock"):
            client(allowed, cluster.topic, exchange="ex_a", timeout=30).call(
                {}, "fail_custom", message="out of stock"
            )
    finally:
        allowed.cleanup()


def test_slow_call_times_out_at_the_callers_float_timeout(cluster):
    started = time.monotonic()
    with pytest.raises(oslo_messaging.MessagingTimeout):
        cluster.client(timeout=0.5).call({}, "sleep", seconds=3)
    assert time.monotonic() - started >= 0.5


def test_calls_are_shared_by_the_servers_of_a_topic(cluster):
    answers = [cluster.client().call({}, "whoami") for _ in range(10)]
    assert set(answers) == {"s1", "s2"}


def test_casts_are_shared_and_all_arrive(cluster):
    tag = unique("cast")
    caster = cluster.client()
    for i in range(20):
        caster.cast({}, "record", tag=f"{tag}-{i}")

    def all_arrived():
        got = [cluster.recorded(s, tag) for s in ("s1", "s2")]
        return got if sum(map(len, got)) == 20 else None

    s1, s2 = wait_until(all_arrived, what="20 casts")
    assert s1 and s2, "both servers of the topic take casts"
    assert sorted(s1 + s2) == sorted(f"{tag}-{i}" for i in range(20))
    assert cluster.recorded("s3", tag) == []


def test_directed_call_and_cast_reach_only_the_named_server(cluster):
    direct = cluster.client(server="s2")
    assert {direct.call({}, "whoami") for _ in range(6)} == {"s2"}
    tag = unique("direct")
    direct.cast({}, "record", tag=tag)
    wait_until(lambda: cluster.recorded("s2", tag), what="directed cast")
    assert cluster.recorded("s1", tag) == []


def test_fanout_reaches_every_server_of_the_exchange(cluster):
    tag = unique("fanout")
    cluster.client(fanout=True).cast({}, "record", tag=tag)
    for server in ("s1", "s2"):
        wait_until(lambda s=server: cluster.recorded(s, tag), what=f"fanout at {server}")
    assert cluster.recorded("s3", tag) == []


def test_exchanges_isolate_servers_of_the_same_topic(cluster):
    assert {cluster.client(exchange="ex_b").call({}, "whoami") for _ in range(4)} == {"s3"}
    with pytest.raises(oslo_messaging.MessagingTimeout):
        cluster.client(exchange="ex_c", timeout=0.5).call({}, "whoami")


def test_many_threads_share_one_transport(cluster):
    caller = cluster.client()

    def work(thread: int) -> list:
        return [caller.call({}, "echo", value=f"{thread}-{i}") for i in range(25)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    assert results == [[f"{t}-{i}" for i in range(25)] for t in range(8)]


def _start_slow_call(cluster, pool, caller, seconds: float):
    """``caller`` calls s1's ``sleep`` in ``pool`` (of one thread, which calls s1 once
    before: a second call may take a line); returns its future once s1 runs it."""
    assert pool.submit(caller.call, {}, "echo", value=0).result(30) == 0
    started = cluster.client("s1").call({}, "sleeping")
    slow = pool.submit(caller.call, {}, "sleep", seconds=seconds)
    wait_until(
        lambda: cluster.client("s1").call({}, "sleeping") > started,
        what="the slow call to start",
    )
    return slow


def _shared_connections_only(cluster, **options):
    """A transport whose calls go through the shared connections, which the limit bounds."""
    conf = cluster.deployment.conf(zmq_caller_sockets=0, **options)
    return cluster.deployment.transport(conf)


def test_connection_limit_closes_idle_connections_and_reopens_them(cluster):
    transport = _shared_connections_only(cluster, zmq_max_connections=1)
    try:
        for server in ("s1", "s2", "s1", "s2"):
            caller = client(transport, cluster.topic, server, "ex_a", timeout=30)
            assert caller.call({}, "echo", value=server) == server
        outbox = transport._driver._get_engine().outbox
        assert len(outbox._dealers) == 1  # the least recently used one was closed
    finally:
        transport.cleanup()


def test_connection_limit_keeps_a_connection_with_a_call_in_flight(cluster):
    transport = _shared_connections_only(cluster, zmq_max_connections=1)
    try:
        s1 = client(transport, cluster.topic, "s1", "ex_a", timeout=30)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = _start_slow_call(cluster, pool, s1, seconds=2)
            s2 = client(transport, cluster.topic, "s2", "ex_a", timeout=30)
            assert s2.call({}, "echo", value="s2") == "s2"  # needs a second connection
            assert slow.result(30) == 2  # s1's connection was not closed under the call
    finally:
        transport.cleanup()


def _engine(transport):
    return transport._driver._get_engine()


def test_a_thread_that_calls_again_uses_a_connection_of_its_own(cluster):
    transport = cluster.deployment.transport()
    try:
        engine = _engine(transport)
        s1 = client(transport, cluster.topic, "s1", "ex_a")
        assert s1.call({}, "echo", value=1) == 1
        assert (engine.lines.count(), len(engine.outbox._dealers)) == (0, 1)  # the first
        assert s1.call({}, "echo", value=2) == 2
        assert engine.lines.count() == 1

        def other_thread() -> list:
            return [s1.call({}, "echo", value=3), s1.call({}, "echo", value=4)]

        thread = concurrent.futures.ThreadPoolExecutor(1)
        assert thread.submit(other_thread).result(30) == [3, 4]
        assert engine.lines.count() == 2  # one per thread
        thread.shutdown()
        wait_until(lambda: engine.lines.count() == 1, what="the ended thread's line closed")
    finally:
        transport.cleanup()


def test_a_call_made_while_another_is_under_way_goes_through_the_shared_connections(cluster):
    transport = cluster.deployment.transport()
    try:
        engine = _engine(transport)
        s1 = client(transport, cluster.topic, "s1", "ex_a", timeout=30)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = _start_slow_call(cluster, pool, s1, seconds=2)
            assert engine.lines.count() == 1  # the slow call, alone, took its thread's line
            assert s1.call({}, "echo", value=1) == 1
            assert engine.lines.count() == 1  # not alone: the loop batches it with others
            assert len(engine.outbox._dealers) == 1
            assert slow.result(30) == 2
    finally:
        transport.cleanup()


def test_without_connections_of_their_own_calls_share_the_processs(cluster):
    transport = _shared_connections_only(cluster)
    try:
        assert client(transport, cluster.topic, "s1", "ex_a").call({}, "echo", value=1) == 1
        assert _engine(transport).lines.count() == 0
        assert len(_engine(transport).outbox._dealers) == 1
    finally:
        transport.cleanup()


def test_closing_the_transport_ends_a_call_waiting_on_its_own_connection(cluster):
    transport = cluster.deployment.transport()
    s1 = client(transport, cluster.topic, "s1", "ex_a", timeout=60)
    with (
        concurrent.futures.ThreadPoolExecutor(1) as pool,
        concurrent.futures.ThreadPoolExecutor(1) as closer,
    ):
        slow = _start_slow_call(cluster, pool, s1, seconds=5)
        assert _engine(transport).lines.count() == 1
        closed = closer.submit(transport.cleanup)
        closed.result(20)  # libzmq woke the waiting thread: no wait for the call's end
        with pytest.raises(RuntimeError, match="closed"):
            slow.result(20)


def test_eventlet_client_process(cluster):
    env = dict(os.environ, PYTHONPATH=helpers.REPO)
    done = subprocess.run(
        green.command(
            "tests.functional.rpc_client_proc",
            "--config-file",
            cluster.deployment.config_file,
            "--topic",
            cluster.topic,
            "--exchange",
            "ex_a",
        ),
        cwd=helpers.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0 and done.stdout.strip() == "OK", done.stderr[-3000:]


# -- tests that need their own servers ------------------------------------------------


def test_call_without_server_times_out_naming_the_target(deployment):
    transport = deployment.transport()
    try:
        topic = unique("nobody")
        started = time.monotonic()
        with pytest.raises(oslo_messaging.MessagingTimeout, match=topic):
            client(transport, topic, timeout=0.3).call({}, "echo", value=1)
        assert time.monotonic() - started >= 0.3
    finally:
        transport.cleanup()


def test_casts_sent_before_any_server_are_delivered_in_order_when_one_starts(deployment):
    topic = unique("early")
    transport = deployment.transport()
    server = None
    try:
        caster = client(transport, topic)
        for i in range(5):
            caster.cast({}, "record", tag=f"early-{i}")  # returns at once: held
        server = deployment.server(topic, "late")
        direct = client(transport, topic, server="late", timeout=30)
        wait_until(
            lambda: len(direct.call({}, "recorded", prefix="early-")) == 5, what="the held casts"
        )
        assert direct.call({}, "recorded", prefix="early-") == [f"early-{i}" for i in range(5)]
    finally:
        transport.cleanup()
        if server:
            server.stop()


def test_casts_beyond_the_hold_limit_fail_clearly(deployment):
    transport = deployment.transport(deployment.conf(zmq_cast_hold_max=2))
    try:
        caster = client(transport, unique("nobody"))
        caster.cast({}, "record", tag=1)
        caster.cast({}, "record", tag=2)
        with pytest.raises(oslo_messaging.MessageDeliveryFailure, match="zmq_cast_hold_max"):
            caster.cast({}, "record", tag=3)
    finally:
        transport.cleanup()


def test_held_casts_past_the_hold_time_are_dropped_with_a_count(deployment, caplog):
    transport = deployment.transport(deployment.conf(zmq_cast_hold_time=0.2))
    try:
        caster = client(transport, unique("nobody"))
        with caplog.at_level(logging.ERROR, logger="zmqdriver.rpc.casts"):
            for i in range(3):
                caster.cast({}, "record", tag=i)
            wait_until(
                lambda: any("Dropped 3 casts" in r.getMessage() for r in caplog.records),
                what="the drop to be logged",
            )
    finally:
        transport.cleanup()


def test_casts_accepted_by_a_server_killed_before_running_them_run_elsewhere(deployment):
    topic = unique("orphans")
    doomed = deployment.server(topic, "doomed")
    survivor = deployment.server(topic, "survivor")
    transport = deployment.transport()
    try:
        caster = client(transport, topic)
        tags = [f"orphan-{i}" for i in range(20)]
        for tag in tags:  # shared by both servers; each takes 2 s to run
            caster.cast({}, "slow_record", tag=tag, seconds=2)
        doomed.kill()  # its casts were acknowledged but have not run
        direct = client(transport, topic, server="survivor", timeout=30)
        wait_until(
            lambda: len(direct.call({}, "recorded", prefix="orphan-")) == 20,
            timeout=60,
            what="every cast to run at the survivor",
        )
        assert sorted(direct.call({}, "recorded", prefix="orphan-")) == sorted(tags)
    finally:
        transport.cleanup()
        survivor.stop()


def test_mandatory_call_without_server_is_undeliverable(deployment):
    transport = deployment.transport()
    try:
        options = oslo_messaging.TransportOptions(at_least_once=True)
        caller = client(transport, unique("nobody"), timeout=60, transport_options=options)
        with pytest.raises(oslo_messaging.MessageUndeliverable):
            caller.call({}, "echo", value=1)
    finally:
        transport.cleanup()


def test_server_started_after_the_client_is_found(deployment):
    topic = unique("late")
    transport = deployment.transport()
    server = None
    try:
        caller = client(transport, topic, timeout=60)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(caller.call, {}, "whoami")
            server = deployment.server(topic, "late-server")
            assert pending.result(60) == "late-server"
    finally:
        transport.cleanup()
        if server:
            server.stop()


@pytest.mark.parametrize("leave", ["stop", "kill"])
def test_server_that_leaves_leaves_traffic_to_the_others(deployment, leave):
    topic = unique(leave)
    first = deployment.server(topic, "first")
    second = deployment.server(topic, "second")
    transport = deployment.transport()
    try:
        caller = client(transport, topic, timeout=30)
        assert {caller.call({}, "whoami") for _ in range(6)} == {"first", "second"}
        # stop: graceful, unregisters first. kill: SIGKILL, no chance to; zmq://
        # notices the dead process at once, Redis keeps its record until expiry
        # and the unacknowledged call moves on after rpc_ack_timeout_base.
        getattr(first, leave)()
        assert {caller.call({}, "whoami") for _ in range(10)} == {"second"}
    finally:
        transport.cleanup()
        second.stop()
        first.kill()


def test_call_monitor_keeps_long_calls_alive_and_fails_frozen_servers_fast(deployment):
    topic = unique("monitor")
    server = deployment.server(topic, "slow")
    transport = deployment.transport()
    try:
        caller = client(transport, topic, timeout=120, call_monitor_timeout=2)
        assert caller.call({}, "sleep", seconds=4) == 4

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(caller.call, {}, "sleep", seconds=30)
            wait_until(lambda: caller.call({}, "sleeping") == 2, what="the call to arrive")
            os.kill(server.proc.pid, 19)  # SIGSTOP: alive but silent
            try:
                with pytest.raises(oslo_messaging.MessagingTimeout, match="heartbeat"):
                    pending.result(60)
            finally:
                os.kill(server.proc.pid, 18)  # SIGCONT
    finally:
        transport.cleanup()
        server.kill()


def test_listener_restarts_in_process_with_several_clients_and_servers(deployment):
    topic = unique("inproc")

    class Endpoint:
        def __init__(self, name):
            self.name = name

        def whoami(self, ctxt):
            return self.name

    server_transports = [deployment.transport() for _ in range(2)]
    client_transports = [deployment.transport() for _ in range(2)]
    servers = [
        oslo_messaging.get_rpc_server(
            transport, oslo_messaging.Target(topic=topic, server=f"p{i}"), [Endpoint(f"p{i}")]
        )
        for i, transport in enumerate(server_transports)
    ]
    try:
        for server in servers:
            server.start()
        callers = [client(t, topic, timeout=30) for t in client_transports]
        assert {c.call({}, "whoami") for c in callers for _ in range(4)} == {"p0", "p1"}

        servers[0].stop()
        servers[0].wait()
        assert {callers[0].call({}, "whoami") for _ in range(4)} == {"p1"}
        servers[0].start()  # a stopped server can be started again
        direct = client(client_transports[1], topic, server="p0", timeout=30)
        assert direct.call({}, "whoami") == "p0"
    finally:
        for server in servers:
            server.stop()
            server.wait()
        for transport in server_transports + client_transports:
            transport.cleanup()


@pytest.mark.parametrize("fault", ["kill", "freeze"])
@pytest.mark.parametrize("connection", ["shared", "own"])
def test_call_to_a_server_that_dies_fails_fast_with_server_lost(deployment, fault, connection):
    topic = unique(fault)
    server = deployment.server(topic, "doomed")
    transport, watching = deployment.transport(), deployment.transport()
    try:
        caller = client(transport, topic, timeout=120)
        watcher = client(watching, topic, timeout=30)  # not a call under way beside it
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            if connection == "own":  # the thread's second call takes its own line
                assert pool.submit(caller.call, {}, "echo", value=0).result(30) == 0
            pending = pool.submit(caller.call, {}, "sleep", seconds=100)
            wait_until(lambda: watcher.call({}, "sleeping") == 1, what="the call to arrive")
            assert _engine(transport).lines.count() == (connection == "own")
            # kill: the connection drops at once; freeze (SIGSTOP): ZeroMQ
            # heartbeats stop being answered. Either way no call monitor is set,
            # so only the lost connection can end the call before 120 s.
            os.kill(server.proc.pid, 9 if fault == "kill" else 19)
            try:
                with pytest.raises(ServerLost, match="was lost before it replied"):
                    pending.result(100)
            finally:
                os.kill(server.proc.pid, 18)  # SIGCONT (harmless after a kill)
    finally:
        transport.cleanup()
        watching.cleanup()
        server.kill()


def test_call_to_a_frozen_server_times_out_saying_it_never_acknowledged(deployment):
    topic = unique("frozen")
    server = deployment.server(topic, "frozen")
    transport = deployment.transport()
    try:
        caller = client(transport, topic, timeout=1.5)  # shorter than rpc_ack_timeout_base
        assert caller.call({}, "echo", value=1) == 1
        os.kill(server.proc.pid, 19)  # SIGSTOP: registered, connected, silent
        try:
            with pytest.raises(oslo_messaging.MessagingTimeout, match="had not acknowledged"):
                caller.call({}, "echo", value=2)
        finally:
            os.kill(server.proc.pid, 18)  # SIGCONT
    finally:
        transport.cleanup()
        server.kill()


def test_casts_a_silent_server_never_acknowledges_go_to_another(deployment):
    # Heartbeats off: only the missing ACK can reveal the frozen server.
    conf = deployment.conf(rpc_ack_timeout_base=0.5, zmq_heartbeat_interval=0)
    topic = unique("silent")
    victim, survivor = deployment.server(topic, "victim"), deployment.server(topic, "survivor")
    transport = deployment.transport(conf)
    try:
        caster = client(transport, topic, timeout=30)
        assert client(transport, topic, "victim", timeout=30).call({}, "echo", value=1) == 1
        os.kill(victim.proc.pid, 19)  # SIGSTOP: connected, registered, silent
        tags = [f"silent-{i}" for i in range(20)]
        for tag in tags:
            caster.cast({}, "record", tag=tag)  # round robin: about half go to the victim
        recorded = client(transport, topic, "survivor", timeout=30)
        wait_until(
            lambda: sorted(recorded.call({}, "recorded", prefix="silent-")) == sorted(tags),
            what="every cast to run on the survivor",
        )
    finally:
        transport.cleanup()
        victim.kill()
        survivor.stop()
