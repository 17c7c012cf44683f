"""PING/PONG on a real loop and real sockets: answered by the loop, whatever the executor does."""

from __future__ import annotations

import os

import zmq

from tests.unit.rpc.test_wire import Kind, Wire, raw_dealer, wait_for, wire  # noqa: F401
from zmqdriver import protocol
from zmqdriver.addressing import Endpoint
from zmqdriver.rpc.ping import ping_servers


def test_a_server_answers_ping_with_its_state_and_counters(wire):  # noqa: F811
    results = ping_servers(wire.outbox, [wire.inbox.endpoint], timeout=5.0)
    result = results[wire.inbox.endpoint]
    assert result.alive and result.rtt > 0
    body = result.body
    assert (body["exchange"], body["topic"], body["accepting"]) == ("openstack", "t", True)
    assert body["backlog"] == 0
    assert body["pid"] == os.getpid()
    assert "requests_received" in body["counters"]


def test_backlog_counts_requests_handed_over_and_not_answered(wire):  # noqa: F811
    wire.request(Kind.CALL)
    wire.request(Kind.CAST)
    call, cast = wire.next_incoming(), wire.next_incoming()

    def backlog() -> int:
        result = ping_servers(wire.outbox, [wire.inbox.endpoint], timeout=5.0)
        return result[wire.inbox.endpoint].body["backlog"]

    # Nothing has run: both wait for the executor, and PING still answers.
    assert backlog() == 2
    call.reply("done")
    wait_for(lambda: backlog() == 1, "the call's reply to leave the backlog")
    cast.reply()
    wait_for(lambda: backlog() == 0, "the cast's DONE to leave the backlog")


def test_a_stopping_server_still_answers_ping(wire):  # noqa: F811
    wire.loop.call(wire.inbox.set_accepting, False)
    result = ping_servers(wire.outbox, [wire.inbox.endpoint], timeout=5.0)
    assert result[wire.inbox.endpoint].body["accepting"] is False


def test_a_server_that_does_not_know_ping_reads_as_not_answering(wire):  # noqa: F811
    # An older server drops the unknown kind with a log line and says nothing.
    router = wire.context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    try:
        silent = Endpoint("127.0.0.1", port)
        results = ping_servers(wire.outbox, [silent, wire.inbox.endpoint], timeout=0.5)
        assert not results[silent].alive
        assert "no answer within 0.5s" in results[silent].error
        assert results[wire.inbox.endpoint].alive
    finally:
        router.close()


def test_nobody_listening_reads_as_not_answering(wire):  # noqa: F811
    with zmq.Context() as ctx, ctx.socket(zmq.ROUTER) as holder:
        port = holder.bind_to_random_port("tcp://127.0.0.1")
    gone = Endpoint("127.0.0.1", port)
    result = ping_servers(wire.outbox, [gone], timeout=2.0)[gone]
    assert not result.alive and result.error


def test_ping_is_a_known_kind_without_body():
    header = protocol.decode_header(protocol.encode_header(Kind.PING, bytes(16)))
    assert header.kind is Kind.PING
