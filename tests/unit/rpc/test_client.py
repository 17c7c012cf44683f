"""RpcSender: one encoding of a message, handed to the Caller or the CastKeeper."""

from __future__ import annotations

import oslo_messaging
import pytest

from tests.unit.rpc.fakes import A, B, FakeOutbox, MemoryMatchMaker, chooser_for, target
from zmqdriver import addressing, protocol
from zmqdriver.exceptions import BackendUnavailable
from zmqdriver.rpc.calls import Caller
from zmqdriver.rpc.casts import CastKeeper, CastLimits
from zmqdriver.rpc.client import RpcSender

PREFIX = "test"
LIMITS = CastLimits(hold_time=30.0, hold_max=4, track_max=100, window=4, ack_timeout=1.0)


class Client:
    def __init__(self) -> None:
        self.outbox = FakeOutbox()
        self.matchmaker = MemoryMatchMaker()
        chooser = chooser_for(self.matchmaker, self.outbox)
        self.frames: list[list[bytes]] = []
        send = self.outbox.send
        self.outbox.send = lambda server, msg_id, frames: (
            self.frames.append(frames),
            send(server, msg_id, frames),
        )
        self.sender = RpcSender(
            caller=Caller(
                outbox=self.outbox, chooser=chooser, ack_timeout=0.05, allowed_remote_exmods=[]
            ),
            keeper=CastKeeper(
                outbox=self.outbox,
                chooser=chooser,
                limits=LIMITS,
                start_background=lambda work: None,
            ),
            chooser=chooser,
            key_prefix=PREFIX,
            default_exchange="nova",
            codec=protocol.Codec.JSON,
        )

    def decoded(self, index: int = -1) -> tuple[protocol.Header, dict]:
        header_frame, body_frame = self.frames[index]
        header = protocol.decode_header(header_frame)
        return header, protocol.decode_body(body_frame, header.codec)


@pytest.fixture
def c() -> Client:
    return Client()


def key(topic: str, server: str | None = None, exchange: str = "nova") -> str:
    return addressing.rpc_key(PREFIX, exchange, topic, server)


def test_a_cast_is_encoded_once_with_everything_the_server_needs(c):
    c.matchmaker.serve(key("t"), A)
    assert c.sender.send(target(), {"user": "u"}, {"method": "m", "args": {}}) is None
    header, body = c.decoded()
    assert header.kind == protocol.Kind.CAST
    assert body == {
        "exchange": "nova",
        "topic": "t",
        "server": None,
        "fanout": False,
        "ctxt": {"user": "u"},
        "message": {"method": "m", "args": {}},
        "batched_done": True,  # this client reads one DONE for several casts
    }


def test_a_directed_cast_goes_to_its_servers_key(c):
    c.matchmaker.serve(key("t"), A)
    c.matchmaker.serve(key("t", "host-b"), B)
    c.sender.send(target(server="host-b"), {}, {"method": "m"})
    assert c.outbox.sent[-1][0] == B


def test_a_call_carries_its_monitor_timeout_and_returns_the_result(c):
    c.matchmaker.serve(key("t"), A)

    def serve(server, msg_id):
        c.outbox.answer(server, msg_id, protocol.Kind.ACK)
        c.outbox.answer(server, msg_id, protocol.Kind.REPLY, {"result": "pong"})

    c.outbox.on_send = serve
    result = c.sender.send(
        target(), {}, {"method": "ping"}, wait_for_reply=True, timeout=5, call_monitor_timeout=3
    )
    assert result == "pong"
    header, body = c.decoded()
    assert header.kind == protocol.Kind.CALL and body["cm_timeout"] == 3


def test_a_fanout_goes_to_every_server_of_the_topic(c):
    c.matchmaker.serve(key("t"), A, B)
    c.sender.send(target(fanout=True), {}, {"method": "m"})
    assert sorted(server for server, _ in c.outbox.sent) == [A, B]
    assert c.decoded()[1]["fanout"] is True


def test_the_targets_exchange_overrides_the_default(c):
    c.matchmaker.serve(key("t", exchange="neutron"), A)
    c.sender.send(oslo_messaging.Target(topic="t", exchange="neutron"), {}, {"method": "m"})
    assert c.decoded()[1]["exchange"] == "neutron"


class AtLeastOnce:
    at_least_once = True


def test_at_least_once_without_a_server_is_undeliverable_at_once(c):
    with pytest.raises(oslo_messaging.MessageUndeliverable) as raised:
        c.sender.send(target(), {}, {"method": "m"}, transport_options=AtLeastOnce())
    assert "No server registered for" in str(raised.value.exception)
    assert c.outbox.sent == []


def test_at_least_once_names_a_matchmaker_outage(c):
    c.matchmaker.failure = BackendUnavailable("redis down")
    with pytest.raises(oslo_messaging.MessageUndeliverable) as raised:
        c.sender.send(target(), {}, {"method": "m"}, transport_options=AtLeastOnce())
    assert "(matchmaker: redis down)" in str(raised.value.exception)


def test_at_least_once_with_a_server_sends(c):
    c.matchmaker.serve(key("t"), A)
    c.sender.send(target(), {}, {"method": "m"}, transport_options=AtLeastOnce())
    assert [server for server, _ in c.outbox.sent] == [A]
