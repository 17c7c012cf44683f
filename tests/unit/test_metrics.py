"""Every counter of zmqdriver.metrics moves when what it counts happens."""

from __future__ import annotations

import contextlib

import oslo_messaging
import pytest
import zmq
from oslo_config import cfg

from tests.unit.rpc.fakes import A, MemoryMatchMaker
from tests.unit.rpc.test_calls import Calls
from tests.unit.rpc.test_casts import Keeper
from tests.unit.rpc.test_wire import Kind, Paused, Wire, wait_for
from zmqdriver import metrics, options, protocol
from zmqdriver.addressing import Endpoint
from zmqdriver.discovery import Directory
from zmqdriver.driver import ZmqDriver
from zmqdriver.exceptions import BackendUnavailable
from zmqdriver.notify.listener import NotificationListener
from zmqdriver.rpc import server as server_module
from zmqdriver.rpc.outbox import Response, Waiters


@contextlib.contextmanager
def moves(*names: str):
    """Assert that each counter in ``names`` grew inside the block."""
    before = metrics.snapshot()
    yield
    after = metrics.snapshot()
    still = [name for name in names if after[name] <= before[name]]
    assert not still, f"counters did not move: {still}"


def test_counters_are_known_and_start_as_ints():
    snapshot = metrics.snapshot()
    assert set(snapshot) == set(metrics.COUNTERS)
    assert all(isinstance(value, int) for value in snapshot.values())
    with pytest.raises(KeyError):
        metrics.incr("no_such_counter")


@pytest.fixture
def wire():
    w = Wire()
    yield w
    w.close()


def test_server_counts_received_acked_duplicates_and_rejected(wire):
    with moves("requests_received", "requests_acked"):
        msg_id = wire.request(Kind.CALL)
        wire.next_incoming()
        assert wire.next_response().kind == Kind.ACK
    with moves("duplicates_dropped"):
        wire.request(Kind.CALL, msg_id)
        assert wire.next_response().kind == Kind.ACK
    wire.loop.call(wire.inbox.set_accepting, False)
    with moves("requests_rejected"):
        wire.request(Kind.CALL)
        assert wire.next_response().kind == Kind.REJECT


def test_a_lost_connection_with_requests_in_flight_counts(wire):
    with zmq.Context() as ctx, ctx.socket(zmq.ROUTER) as holder:
        port = holder.bind_to_random_port("tcp://127.0.0.1")
    gone = Endpoint("127.0.0.1", port)
    before = metrics.snapshot()["connections_lost"]
    msg_id = protocol.new_msg_id()
    wire.outbox.expect(msg_id, wire.responses.put)
    wire.outbox.send(gone, msg_id, [protocol.encode_header(Kind.CALL, msg_id), b"{}"])
    wait_for(lambda: metrics.snapshot()["connections_lost"] > before, "the loss to count")


def test_client_counts_resends_and_timeouts():
    calls = Calls()
    calls.matchmaker.serve(calls.key, A)
    with moves("resends", "timeouts"):
        with pytest.raises(oslo_messaging.MessagingTimeout):
            calls.call(timeout=0.3)  # A never acknowledges: sent again, then times out


def test_casts_held_count_once_each():
    keeper = Keeper()
    with moves("casts_held"):
        keeper.cast()


def test_a_reply_nobody_waits_for_counts_as_late():
    waiters = Waiters(deliver=lambda fn, *args: fn(*args))
    with moves("replies_late"):
        waiters.route(Response(Kind.REPLY, protocol.new_msg_id(), A))


def test_failed_lookups_count_as_matchmaker_errors():
    matchmaker = MemoryMatchMaker()
    matchmaker.failure = BackendUnavailable("down")
    with moves("matchmaker_errors"), pytest.raises(BackendUnavailable):
        Directory(matchmaker, ttl=1.0).endpoints("k")


def test_notification_counters(tmp_path):
    conf = cfg.ConfigOpts()
    conf([])
    options.register(conf)
    conf.set_override("zmq_matchmaker_path", str(tmp_path / "matchmaker.sqlite"), options.GROUP)
    conf.set_override("zmq_notification_retention_count", 1, options.GROUP)
    driver = ZmqDriver(conf, oslo_messaging.TransportURL.parse(conf, "zmq://"))
    try:
        target = oslo_messaging.Target(topic="metrics.info")
        with moves("notifications_appended", "notifications_dropped"):
            for n in range(3):
                driver.send_notification(target, {}, {"n": n}, 2.0)
        store = driver._notification_store()
        stream = "zmqdriver/notify/openstack/metrics.info"
        listener = NotificationListener(store, [stream], "nopool", "c1")
        with moves("notifications_delivered", "notifications_requeued"):
            (message,) = listener.poll(timeout=5)
            message.requeue()
        with moves("notifications_redelivered"):
            (again,) = listener.poll(timeout=5)
            again.acknowledge()
        listener.stop()
    finally:
        driver.cleanup()


def test_a_pause_and_the_requests_refused_after_it_count(monkeypatch):
    monkeypatch.setattr(server_module, "FENCE_AFTER_PAUSE", 5.0)
    paused = Paused()
    try:
        with moves("pauses"):
            paused.pause()
        with moves("requests_rejected"):
            paused.wire.request(Kind.CAST)
            assert paused.wire.next_response().kind == Kind.REJECT
    finally:
        paused.wire.close()
