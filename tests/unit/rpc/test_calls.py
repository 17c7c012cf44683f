"""The Caller in-process: delivery, ACKs, resends, replies, heartbeats and timeouts.

Time is real here (a call waits on a queue) but short: ACK_TIMEOUT is 50 ms.
A scripted server answers from the fake outbox's ``on_send``.
"""

from __future__ import annotations

import logging
import sys
import threading

import oslo_messaging
import pytest
from oslo_messaging._drivers import common as driver_common

from tests.unit.rpc.fakes import A, B, FakeOutbox, MemoryMatchMaker, chooser_for, key_of, target
from zmqdriver import protocol
from zmqdriver.exceptions import KeyRefused, ServerLost
from zmqdriver.rpc.calls import Call, Caller
from zmqdriver.rpc.outbox import Response

ACK, REPLY, REJECT, HEARTBEAT = (
    protocol.Kind.ACK,
    protocol.Kind.REPLY,
    protocol.Kind.REJECT,
    protocol.Kind.HEARTBEAT,
)
ACK_TIMEOUT = 0.05


class Calls:
    def __init__(self) -> None:
        self.outbox = FakeOutbox()
        self.matchmaker = MemoryMatchMaker()
        self.caller = Caller(
            outbox=self.outbox,
            chooser=chooser_for(self.matchmaker, self.outbox),
            ack_timeout=ACK_TIMEOUT,
            allowed_remote_exmods=[],
        )
        self.target = target()
        self.key = key_of(self.target)
        # What each server does with a request: a list of (kind, body) answers.
        self.script: dict = {}
        self.outbox.on_send = self._serve

    def _serve(self, server, msg_id) -> None:
        for kind, body in self.script.get(server, []):
            if kind == "lose":
                self.outbox.lose(server, body)
            elif kind == "refuse":
                self.outbox.lose(server, body, refused=True)
            else:
                self.outbox.answer(server, msg_id, kind, body)

    def call(self, timeout: float | None = 2.0, **kwargs) -> Call:
        call = Call(self.target, self.key, protocol.new_msg_id(), [b"f"], timeout=timeout, **kwargs)
        self.last = call
        return self.caller.call(call)

    def servers_tried(self) -> list:
        return [server for server, _ in self.outbox.sent]


@pytest.fixture
def c() -> Calls:
    return Calls()


def reply(result) -> tuple:
    return (REPLY, {"result": result})


def test_a_call_returns_the_servers_result_and_forgets_its_id(c):
    c.matchmaker.serve(c.key, A)
    c.script[A] = [(ACK, None), reply(42)]
    assert c.call() == 42
    assert c.last.msg_id not in c.outbox.waiters
    assert c.outbox.dropped == []


def test_a_reply_without_its_ack_counts_as_accepted(c):
    c.matchmaker.serve(c.key, A)
    c.script[A] = [reply("late ack")]
    assert c.call() == "late ack"


def test_a_remote_exception_is_raised_in_the_caller(c):
    try:
        raise ValueError("bad input")
    except ValueError:
        failure = driver_common.serialize_remote_exception(sys.exc_info())
    c.matchmaker.serve(c.key, A)
    c.script[A] = [(ACK, None), (REPLY, {"failure": failure})]
    with pytest.raises(ValueError, match="bad input"):
        c.call()


def test_a_malformed_reply_names_its_server(c):
    c.matchmaker.serve(c.key, A)

    def serve(server, msg_id):
        c.outbox.answer(server, msg_id, ACK)
        c.outbox.waiters.route(Response(REPLY, msg_id, server, body=b"\xff not json"))

    c.outbox.on_send = serve
    with pytest.raises(oslo_messaging.MessagingException, match=f"Malformed reply from {A}"):
        c.call()


def test_a_silent_server_is_dropped_and_the_same_message_goes_to_another(c, caplog):
    c.matchmaker.serve(c.key, A, B)
    c.script[B] = [(ACK, None), reply("from B")]
    with caplog.at_level(logging.WARNING, logger="zmqdriver.rpc.calls"):
        assert c.call() == "from B"
    assert c.outbox.sent == [(A, c.last.msg_id), (B, c.last.msg_id)]
    assert c.outbox.dropped == [A]  # what may sit in A's socket must not reach it later
    assert "did not acknowledge" in caplog.text


def test_silence_is_logged_once_per_server_not_per_call(c, caplog):
    c.matchmaker.serve(c.key, A, B)
    c.script[B] = [(ACK, None), reply(1)]
    with caplog.at_level(logging.WARNING, logger="zmqdriver.rpc.calls"):
        c.call()
        c.outbox.suspects.clear(A)
        c.call()
    assert caplog.text.count("did not acknowledge") == 1
    assert c.servers_tried() == [A, B, A, B]


def test_a_stopping_server_rejects_and_the_call_goes_on_without_dropping_it(c):
    c.matchmaker.serve(c.key, A, B)
    c.script[A] = [(REJECT, None)]
    c.script[B] = [(ACK, None), reply("ok")]
    assert c.call() == "ok"
    assert c.servers_tried() == [A, B]
    assert c.outbox.dropped == []


def test_a_connection_lost_before_the_ack_sends_the_call_elsewhere(c, caplog):
    c.matchmaker.serve(c.key, A, B)
    c.script[A] = [("lose", None)]
    c.script[B] = [(ACK, None), reply("ok")]
    with caplog.at_level(logging.DEBUG, logger="zmqdriver.rpc.calls"):
        assert c.call() == "ok"
    assert "connection lost before the ACK" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_connection_lost_after_the_ack_is_serverlost(c):
    c.matchmaker.serve(c.key, A, B)
    c.script[A] = [(ACK, None), ("lose", None)]
    with pytest.raises(ServerLost, match="may or may not have run"):
        c.call()
    assert c.servers_tried() == [A]  # accepted: never sent elsewhere


def test_news_about_a_server_tried_before_is_ignored(c):
    c.matchmaker.serve(c.key, A, B)
    c.script[B] = [(REJECT, None)]  # stale: B is not the server now

    def serve(server, msg_id):
        if server == A:
            c.outbox.answer(B, msg_id, REJECT)
            c.outbox.answer(A, msg_id, ACK)
            c.outbox.answer(A, msg_id, REPLY, {"result": "A"})

    c.outbox.on_send = serve
    assert c.call() == "A"


def test_a_refused_handshake_is_named_in_the_final_error(c):
    c.matchmaker.serve(c.key, A)
    c.script[A] = [("lose", "the server refused this client's CURVE key")]
    with pytest.raises(oslo_messaging.MessageDeliveryFailure) as raised:
        c.call(retry=1)
    assert "after 2 attempts" in str(raised.value)
    assert f"the handshake with {A} failed: the server refused" in str(raised.value)


REFUSAL = (
    "the server refused this client's CURVE key K (ZAP status 400); add this client's "
    "public key file to the server's zmq_curve_allowed_keys_dir"
)


def test_a_refused_key_ends_the_call_at_once_naming_server_and_fix(c):
    c.matchmaker.serve(c.key, A, B)
    c.script[A] = [("refuse", REFUSAL)]
    c.script[B] = [(ACK, None), reply("never asked")]
    with pytest.raises(KeyRefused) as raised:
        c.call(timeout=30.0)
    assert isinstance(raised.value, oslo_messaging.MessageDeliveryFailure)
    message = str(raised.value)
    assert f"refused by {A} at the handshake" in message
    assert "topic='t'" in message and "zmq_curve_allowed_keys_dir" in message
    assert c.servers_tried() == [A]  # final: neither another server nor a resend
    assert c.outbox.dropped == [A]  # the refused connection is not kept reconnecting


def test_a_refusal_is_final_even_with_retries_left(c):
    c.matchmaker.serve(c.key, A)
    c.script[A] = [("refuse", REFUSAL)]
    with pytest.raises(KeyRefused):
        c.call(timeout=30.0, retry=5)
    assert len(c.outbox.sent) == 1


def test_retry_bounds_the_resends(c):
    c.matchmaker.serve(c.key, A, B)
    with pytest.raises(oslo_messaging.MessageDeliveryFailure, match="after 1 attempts"):
        c.call(retry=0)
    assert len(c.outbox.sent) == 1


def test_no_server_within_the_timeout(c):
    with pytest.raises(oslo_messaging.MessagingTimeout, match="No server for .* within 0.2s"):
        c.call(timeout=0.2)


def test_the_timeout_ends_a_wait_for_the_ack(c):
    c.matchmaker.serve(c.key, A)
    caller = Caller(
        outbox=c.outbox,
        chooser=chooser_for(c.matchmaker, c.outbox),
        ack_timeout=5.0,
        allowed_remote_exmods=[],
    )
    c.caller = caller
    with pytest.raises(oslo_messaging.MessagingTimeout, match="had not acknowledged"):
        c.call(timeout=0.1)
    assert c.outbox.dropped == [A]


def test_the_timeout_ends_a_wait_for_the_reply(c):
    c.matchmaker.serve(c.key, A)
    c.script[A] = [(ACK, None)]
    with pytest.raises(oslo_messaging.MessagingTimeout, match="waiting for a reply"):
        c.call(timeout=0.2)


def test_without_heartbeats_the_monitor_timeout_fails_the_call_early(c):
    c.matchmaker.serve(c.key, A)
    c.script[A] = [(ACK, None)]
    with pytest.raises(oslo_messaging.MessagingTimeout, match="No heartbeat"):
        c.call(timeout=30.0, monitor_timeout=0.2)


def test_heartbeats_keep_a_long_call_alive_past_the_monitor_timeout(c):
    c.matchmaker.serve(c.key, A)

    def serve(server, msg_id):
        c.outbox.answer(server, msg_id, ACK)
        beats = [
            threading.Timer(0.1 * i, c.outbox.answer, (A, msg_id, HEARTBEAT)) for i in (1, 2, 3)
        ]
        done = threading.Timer(0.4, c.outbox.answer, (A, msg_id, REPLY, {"result": "slow"}))
        for timer in [*beats, done]:
            timer.start()

    c.outbox.on_send = serve
    assert c.call(timeout=5.0, monitor_timeout=0.25) == "slow"


def test_a_call_without_timeout_waits_for_its_reply(c):
    c.matchmaker.serve(c.key, A)

    def serve(server, msg_id):
        c.outbox.answer(server, msg_id, ACK)
        threading.Timer(0.2, c.outbox.answer, (A, msg_id, REPLY, {"result": "x"})).start()

    c.outbox.on_send = serve
    assert c.call(timeout=None) == "x"


def test_a_call_refused_after_its_ack_is_delivered_again_elsewhere(c):
    c.matchmaker.serve(c.key, A, B)
    c.script[A] = [(ACK, None), (REJECT, None)]  # took it, paused, refused it unrun
    c.script[B] = [(ACK, None), reply("from B")]
    assert c.call() == "from B"
    assert c.servers_tried() == [A, B]
    assert c.outbox.dropped == []
