"""A server receiving garbage keeps running and keeps serving.

The server runs in its own process; the attacks come from raw ZeroMQ and TCP
sockets aimed at the endpoint it published in the matchmaker.
"""

from __future__ import annotations

import socket

import oslo_messaging
import pytest
import zmq

from tests.functional.helpers import client, unique
from zmqdriver import addressing, matchmaker, options, protocol


@pytest.fixture
def target(deployment):
    """A running server, its topic, its published endpoint and a working client."""
    topic = unique("hostile")
    server = deployment.server(topic, "victim")
    conf = deployment.conf()
    mm = matchmaker.load(conf, oslo_messaging.TransportURL.parse(conf, deployment.url))
    key = addressing.rpc_key(conf[options.GROUP].zmq_matchmaker_prefix, "openstack", topic)
    (record,) = mm.lookup(key)
    mm.close()
    transport = deployment.transport()
    try:
        yield topic, addressing.decode_record(record), client(transport, topic, timeout=30)
    finally:
        transport.cleanup()
        server.stop()  # also asserts it exits cleanly: it did not crash


@pytest.fixture
def attacker(target):
    """A raw DEALER connected to the server's published endpoint."""
    _, endpoint, _ = target
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVTIMEO, 10000)
    dealer.connect(endpoint.uri)
    yield dealer
    context.destroy(linger=0)


def _request(kind: protocol.Kind, body: bytes, version: int = protocol.VERSION) -> list[bytes]:
    header = bytearray(protocol.encode_header(kind, protocol.new_msg_id()))
    header[2] = version
    return [bytes(header), body]


BAD_MESSAGES = {
    "one garbage frame": [b"garbage"],
    "empty frames": [b"", b""],
    "too many frames": [b"a", b"b", b"c", b"d"],
    "truncated header": [protocol.encode_header(protocol.Kind.CALL, b"x" * 16)[:10], b"{}"],
    "unknown version": _request(protocol.Kind.CALL, b"{}", version=99),
    "reply kind sent to a server": _request(protocol.Kind.REPLY, b"{}"),
    "cast body that is not JSON": _request(protocol.Kind.CAST, b"\xff\x00garbage"),
    "cast body that is a list": _request(protocol.Kind.CAST, b"[1, 2, 3]"),
}


def test_garbage_frames_are_dropped_and_the_server_keeps_serving(target, attacker):
    _, _, caller = target
    for frames in BAD_MESSAGES.values():
        attacker.send_multipart(frames)
    assert caller.call({}, "echo", value="still here") == "still here"


def test_a_call_whose_body_does_not_decode_gets_an_error_reply(target, attacker):
    _, _, caller = target
    attacker.send_multipart(_request(protocol.Kind.CALL, b"\xff not json"))
    kinds = [protocol.decode_header(attacker.recv_multipart()[0]).kind for _ in range(2)]
    assert kinds == [protocol.Kind.ACK, protocol.Kind.REPLY]
    assert caller.call({}, "echo", value=1) == 1


def test_oversized_messages_and_raw_tcp_garbage_do_not_hurt(target, attacker):
    _, endpoint, caller = target
    # Above the 64 MiB default zmq_max_message_size: the peer is cut off.
    attacker.send_multipart(_request(protocol.Kind.CAST, b"x" * (65 * 1024 * 1024)))
    for _ in range(20):  # a small flood of connections speaking no ZMTP at all
        with socket.create_connection((endpoint.host, endpoint.port), timeout=10) as raw:
            raw.sendall(b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)))
    assert caller.call({}, "echo", value="ok") == "ok"
