"""Inbox and Outbox in-process: a real I/O loop and real ZeroMQ sockets on loopback.

One loop runs both sides (as when a process calls its own server); each test
waits on a condition, never on a fixed sleep.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import select
import socket
import sys
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import zmq

from harness.wait import eventually
from tests.unit.rpc.fakes import Clock, MemoryMatchMaker
from zmqdriver import addressing, protocol
from zmqdriver.addressing import Endpoint
from zmqdriver.discovery import Registrar
from zmqdriver.eventloop.loop import SWEEP_EVERY, IoLoop
from zmqdriver.eventloop.native import NativeRuntime
from zmqdriver.eventloop.pauses import PauseWatch
from zmqdriver.rpc import outbox as outbox_module
from zmqdriver.rpc import server as server_module
from zmqdriver.rpc.outbox import PEER_LOST, Heartbeats, Outbox
from zmqdriver.rpc.server import BindSettings, Inbox, RpcListener, StaleRequest

Kind = protocol.Kind
WAIT = 10.0
SETTINGS = BindSettings(
    bind_address="127.0.0.1", host="127.0.0.1", min_port=20000, max_port=60000, retries=100
)


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Wire:
    def __init__(
        self, pauses: PauseWatch | None = None, sweep_every: float = SWEEP_EVERY, **outbox_args
    ) -> None:
        self.context = zmq.Context()
        self.loop = IoLoop(NativeRuntime(), name="test-io", pauses=pauses, sweep_every=sweep_every)
        self.incoming: queue.Queue = queue.Queue()
        self.inbox = self.loop.call(self._make_inbox)
        self.inbox.listener = SimpleNamespace(on_incoming_callback=self._collect)
        self.loop.call(self.inbox.set_accepting, True)
        self.outbox = Outbox(
            self.loop,
            self.context,
            linger_ms=0,
            heartbeats=Heartbeats(0, 0),
            **outbox_args,
        )
        self.responses: queue.Queue = queue.Queue()
        self.raw: list[zmq.Socket] = []  # the tests' own sockets, closed with the wire

    def _make_inbox(self, settings: BindSettings = SETTINGS) -> Inbox:
        return Inbox(
            self.loop,
            self.context,
            settings=settings,
            topic="t",
            exchange="openstack",
            dedup_window=100,
            linger_ms=0,
        )

    def _collect(self, messages) -> None:
        for message in messages:
            self.incoming.put(message)

    def request(self, kind: Kind, msg_id: bytes | None = None, *, body: dict | None = None):
        """Send a request; its responses land in ``self.responses``."""
        msg_id = msg_id or protocol.new_msg_id()
        if msg_id not in self.outbox.waiters:
            self.outbox.expect(msg_id, self.responses.put)
        payload = body or {
            "exchange": "openstack",
            "topic": "t",
            "ctxt": {"user": "u"},
            "message": {"method": "m"},
        }
        frames = [
            protocol.encode_header(kind, msg_id),
            protocol.encode_body(payload, protocol.Codec.JSON),
        ]
        self.outbox.send(self.inbox.endpoint, msg_id, frames)
        return msg_id

    def next_response(self):
        return self.responses.get(timeout=WAIT)

    def next_incoming(self):
        return self.incoming.get(timeout=WAIT)

    def close(self) -> None:
        for dealer in self.raw:  # an open socket would make context.term() wait for ever
            dealer.close(linger=0)
        self.loop.call(self.outbox.close)
        self.loop.call(self.inbox.close)
        self.loop.stop()
        self.context.term()


@pytest.fixture
def wire():
    w = Wire()
    yield w
    w.close()


def raw_dealer(wire: Wire) -> zmq.Socket:
    """A bare connection to the Inbox; closed by the fixture even if the test fails."""
    dealer = wire.context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(wire.inbox.endpoint.uri)
    wire.raw.append(dealer)
    return dealer


def raw_call(dealer: zmq.Socket, method: str = "m") -> bytes:
    """Send a CALL from a raw dealer; its id."""
    msg_id = protocol.new_msg_id()
    body = {"exchange": "openstack", "topic": "t", "ctxt": {}, "message": {"method": method}}
    dealer.send_multipart(
        [protocol.encode_header(Kind.CALL, msg_id), protocol.encode_body(body, protocol.Codec.JSON)]
    )
    return msg_id


@contextlib.contextmanager
def loop_held(wire: Wire) -> Iterator[None]:
    """The wire's loop thread kept busy in a task for the ``with`` block."""
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        inside.set()
        release.wait(3 * WAIT)  # longer than any wait inside the block

    wire.loop.submit(hold)
    assert inside.wait(WAIT)
    try:
        yield
    finally:
        release.set()


# -- calls ------------------------------------------------------------------------------


def test_a_call_is_acknowledged_on_arrival_and_answered_with_its_reply(wire):
    wire.request(Kind.CALL)
    message = wire.next_incoming()
    assert (message.ctxt, message.message) == ({"user": "u"}, {"method": "m"})
    message.heartbeat()
    message.reply("result")
    kinds = [wire.next_response(), wire.next_response(), wire.next_response()]
    assert [r.kind for r in kinds] == [Kind.ACK, Kind.HEARTBEAT, Kind.REPLY]
    reply = kinds[-1]
    assert protocol.decode_body(reply.body, reply.codec) == {"result": "result"}
    assert reply.endpoint == wire.inbox.endpoint


def test_a_call_is_handed_to_the_executor_before_its_ack_leaves(wire):
    # The executor's wake-up starts first: the ACK's send is off the call's path.
    order: list[str] = []
    acked = threading.Event()

    def hand(messages) -> None:  # oslo's callback, in the server's loop thread
        acked.wait(1.0)  # an ACK sent before this returns would arrive meanwhile
        order.append("handed")
        wire.incoming.put(messages[0])

    wire.inbox.listener.on_incoming_callback = hand
    dealer = raw_dealer(wire)  # read here: the wire's own outbox shares the server's loop
    raw_call(dealer)
    assert dealer.poll(WAIT * 1000)
    order.append(protocol.decode_header(dealer.recv_multipart()[0]).kind.name)
    acked.set()
    wire.next_incoming()
    assert order == ["handed", "ACK"]


def test_a_failure_and_an_unencodable_result_reach_the_caller_as_failures(wire):
    wire.request(Kind.CALL)
    try:
        raise KeyError("missing")
    except KeyError:
        wire.next_incoming().reply(failure=sys.exc_info())
    wire.request(Kind.CALL)
    wire.next_incoming().reply(object())
    replies = [r for r in (wire.next_response() for _ in range(4)) if r.kind == Kind.REPLY]
    bodies = [protocol.decode_body(r.body, r.codec) for r in replies]
    assert all("failure" in body for body in bodies)
    assert "missing" in bodies[0]["failure"] and "Cannot convert" in bodies[1]["failure"]


def test_a_cast_that_runs_at_once_gets_only_its_done(wire):
    msg_id = wire.request(Kind.CAST)
    wire.next_incoming().reply()
    assert wire.next_response().kind == Kind.DONE
    with pytest.raises(queue.Empty):  # the DONE implied the ACK
        wire.responses.get(timeout=outbox_module.SUSPECT_FOR / 100)
    assert msg_id in wire.outbox.waiters


def test_a_slow_cast_is_acknowledged_before_its_done(wire):
    wire.request(Kind.CAST)
    message = wire.next_incoming()
    assert wire.next_response().kind == Kind.ACK
    message.reply()
    assert wire.next_response().kind == Kind.DONE


def test_a_resent_cast_runs_once_and_its_done_is_repeated(wire):
    msg_id = wire.request(Kind.CAST)
    wire.next_incoming().reply()
    assert wire.next_response().kind == Kind.DONE
    wire.request(Kind.CAST, msg_id)
    assert wire.next_response().kind == Kind.DONE
    assert wire.incoming.empty()


def test_a_cast_resent_while_running_gets_its_done_on_both_connections(wire):
    msg_id = wire.request(Kind.CAST)
    message = wire.next_incoming()
    assert wire.next_response().kind == Kind.ACK
    other = raw_dealer(wire)  # the sender's new connection, after it replaced the old one
    other.send_multipart([protocol.encode_header(Kind.CAST, msg_id), b"{}"])
    assert protocol.decode_header(other.recv_multipart()[0]).kind == Kind.ACK
    message.reply()
    assert wire.next_response().kind == Kind.DONE
    assert protocol.decode_header(other.recv_multipart()[0]).kind == Kind.DONE
    assert wire.incoming.empty()
    other.close()


def raw_casts(dealer: zmq.Socket, count: int, batched: bool = True) -> list[bytes]:
    """``count`` casts sent from a bare connection (reading batched DONEs or not); their ids."""
    body = {"exchange": "openstack", "topic": "t", "message": {"method": "m"}}
    if batched:
        body[protocol.BATCHED_DONE] = True
    ids = [protocol.new_msg_id() for _ in range(count)]
    for msg_id in ids:
        dealer.send_multipart(
            [
                protocol.encode_header(Kind.CAST, msg_id),
                protocol.encode_body(body, protocol.Codec.JSON),
            ]
        )
    return ids


def answers_until_done(dealer: zmq.Socket, ids: list[bytes]) -> list[list[bytes]]:
    """Every message that comes back to ``dealer`` until the DONEs of all ``ids`` have."""
    received, done = [], set()
    while done != set(ids):
        assert dealer.poll(WAIT * 1000), f"no DONE yet for {len(set(ids) - done)} casts"
        frames = dealer.recv_multipart()
        header = protocol.decode_header(frames[0])
        if header.kind == Kind.DONE:
            done.add(header.msg_id)
            done.update(protocol.more_done_ids(frames[1]) if len(frames) == 2 else [])
        received.append(frames)
    return received


def casts_answered_together(wire: Wire, batched: bool) -> tuple[list[bytes], list[list[bytes]]]:
    """Three casts from a bare connection, run while the loop is busy: their ids, and
    every message that came back until the DONEs of all three did."""
    dealer = raw_dealer(wire)
    ids = raw_casts(dealer, 3, batched)
    messages = [wire.next_incoming() for _ in ids]
    with loop_held(wire):  # the three DONEs queue behind it
        for message in messages:
            message.reply()
    return ids, answers_until_done(dealer, ids)


def test_dones_of_casts_run_together_leave_in_one_message_to_a_client_that_reads_them(wire):
    ids, received = casts_answered_together(wire, batched=True)
    assert len(received) == 1
    assert protocol.decode_header(received[0][0]).msg_id == ids[0]
    assert protocol.more_done_ids(received[0][1]) == ids[1:]


def test_casts_that_end_together_are_settled_by_one_loop_task(wire, monkeypatch):
    tasks: list[str] = []
    submit = wire.loop.submit

    def counting_submit(fn, *args):
        tasks.append(getattr(fn, "__name__", ""))
        submit(fn, *args)

    monkeypatch.setattr(wire.loop, "submit", counting_submit)
    casts_answered_together(wire, batched=True)
    assert tasks.count("_settle_casts") == 1


def test_a_client_that_did_not_say_it_reads_batched_dones_gets_one_per_cast(wire):
    ids, received = casts_answered_together(wire, batched=False)
    assert [protocol.decode_header(frames[0]).msg_id for frames in received] == ids
    assert all(len(frames) == 1 for frames in received)


def kinds_and_ids(frames: list[bytes]) -> tuple[Kind, list[bytes]]:
    """A response's kind and the ids it answers (a batched DONE carries several)."""
    header = protocol.decode_header(frames[0])
    more = (
        protocol.more_done_ids(frames[1]) if header.kind == Kind.DONE and len(frames) == 2 else []
    )
    return header.kind, [header.msg_id, *more]


@pytest.fixture
def idle_wire(monkeypatch):
    """A wire whose loop, once idle, stays idle: no sweep, no ACK due (60 s delay)."""
    monkeypatch.setattr(server_module, "CAST_ACK_DELAY", 60.0)
    w = Wire(sweep_every=60.0)
    yield w
    w.close()


def test_casts_ending_while_the_loop_is_idle_are_answered_by_the_last_one_out_alone(
    idle_wire, monkeypatch
):
    wire = idle_wire
    dealer = raw_dealer(wire)
    ids = raw_casts(dealer, 3)
    messages = [wire.next_incoming() for _ in ids]
    tasks: list[str] = []
    submit = wire.loop.submit
    monkeypatch.setattr(
        wire.loop, "submit", lambda fn, *args: (tasks.append(fn.__name__), submit(fn, *args))
    )
    wait_for(lambda: wire.loop.waiting, "the loop to wait")
    for message in messages:
        message.reply()
    assert [kinds_and_ids(frames) for frames in answers_until_done(dealer, ids)] == [
        (Kind.DONE, ids)
    ]
    assert "_settle_casts" not in tasks  # the loop was not woken to send it


def test_a_cast_that_ends_beside_a_slow_one_has_its_done_within_the_ack_delay(wire):
    dealer = raw_dealer(wire)
    quick, slow = raw_casts(dealer, 2)
    messages = [wire.next_incoming(), wire.next_incoming()]
    messages[0].reply()  # the other is still running
    answers = [kinds_and_ids(frames) for frames in answers_until_done(dealer, [quick])]
    assert answers == [(Kind.DONE, [quick])]
    assert dealer.poll(WAIT * 1000)
    assert kinds_and_ids(dealer.recv_multipart()) == (Kind.ACK, [slow])
    messages[1].reply()  # past its ACK: nothing to wait for, its DONE goes at once
    assert [kinds_and_ids(frames) for frames in answers_until_done(dealer, [slow])] == [
        (Kind.DONE, [slow])
    ]


def test_a_resend_of_a_cast_whose_done_waits_gets_that_done_too(idle_wire):
    wire = idle_wire
    dealer, other = raw_dealer(wire), raw_dealer(wire)
    first, second = raw_casts(dealer, 2)
    messages = [wire.next_incoming(), wire.next_incoming()]
    wait_for(lambda: wire.loop.waiting, "the loop to wait")
    messages[0].reply()  # its DONE waits for the second
    other.send_multipart([protocol.encode_header(Kind.CAST, first), b"{}"])  # a resend
    wait_for(lambda: first in wire.inbox._resent, "the loop to read the resend")
    messages[1].reply()
    assert [kinds_and_ids(f) for f in answers_until_done(dealer, [first, second])] == [
        (Kind.DONE, [first, second])
    ]
    assert [kinds_and_ids(f) for f in answers_until_done(other, [first])] == [(Kind.DONE, [first])]
    assert wire.incoming.empty()  # run once


def test_a_batched_done_completes_each_of_its_casts_and_a_malformed_one_is_dropped(wire, caplog):
    router, server = silent_server(wire)
    ids = [protocol.new_msg_id() for _ in range(3)]
    for msg_id in ids:
        wire.outbox.expect(msg_id, wire.responses.put)
        wire.outbox.send(server, msg_id, [protocol.encode_header(Kind.CAST, msg_id), b"{}"])
    identity = [router.recv_multipart()[0] for _ in ids][0]
    with caplog.at_level(logging.WARNING, logger="zmqdriver"):
        router.send_multipart([identity, protocol.encode_header(Kind.DONE, ids[0]), b"x" * 17])
        router.send_multipart([identity, *protocol.encode_done(ids)])
        responses = [wire.next_response() for _ in ids]
    assert [(r.kind, r.msg_id) for r in responses] == [(Kind.DONE, msg_id) for msg_id in ids]
    assert "not a multiple of 16" in caplog.text


def _request_frames(kind: Kind) -> list[bytes]:
    """A request as the Inbox's reader gets it from the ROUTER (identity first)."""
    body = {"exchange": "openstack", "topic": "t", "ctxt": {}, "message": {"method": "m"}}
    header = protocol.encode_header(kind, protocol.new_msg_id())
    return [b"client", header, protocol.encode_body(body, protocol.Codec.JSON)]


def _ids(requests: list[list[bytes]]) -> list[bytes]:
    return [protocol.decode_header(frames[1]).msg_id for frames in requests]


def test_casts_go_to_the_executor_at_the_end_of_the_loops_turn(wire):
    """A hand-over wakes an executor thread: in the middle of a turn it would preempt
    the loop and wait for its GIL (1.2 involuntary switches per cast, doc/benchmarks.md)."""
    casts = [_request_frames(Kind.CAST) for _ in range(3)]

    def one_turn() -> int:
        for frames in casts:
            wire.inbox._on_request(frames)
        return wire.incoming.qsize()

    assert wire.loop.call(one_turn) == 0
    assert [wire.next_incoming().header.msg_id for _ in casts] == _ids(casts)


def test_a_call_goes_at_once_after_the_casts_read_before_it(wire):
    """Its caller waits; and a cast sent before a call is handed over before it."""
    requests = [_request_frames(kind) for kind in (Kind.CAST, Kind.CALL, Kind.CAST)]

    def one_turn() -> list[int]:
        handed = []
        for frames in requests:
            wire.inbox._on_request(frames)
            handed.append(wire.incoming.qsize())
        return handed

    assert wire.loop.call(one_turn) == [0, 2, 2]
    assert [wire.next_incoming().header.msg_id for _ in requests] == _ids(requests)


def test_a_stop_hands_over_the_casts_read_before_it(wire):
    cast = _request_frames(Kind.CAST)

    def read_then_stop() -> int:
        wire.inbox._on_request(cast)
        wire.inbox.set_accepting(False)  # listener.stop() runs this as a task between reads
        return wire.incoming.qsize()

    assert wire.loop.call(read_then_stop) == 1  # taken before the stop: it runs


def test_answers_wake_their_callers_at_the_end_of_the_loops_turn_and_reach_handlers_at_once(wire):
    """A caller woken in the middle of a turn would preempt the loop and wait for its GIL."""
    server = Endpoint("127.0.0.1", 1)
    call_id, cast_id = protocol.new_msg_id(), protocol.new_msg_id()
    caller = wire.outbox.expect(call_id)
    handled: list[Kind] = []
    wire.outbox.expect(cast_id, lambda response: handled.append(response.kind))

    def one_turn() -> tuple[list[Kind], bool]:
        reply = [protocol.encode_header(Kind.REPLY, call_id), b"{}"]
        for frames in (reply, [protocol.encode_header(Kind.DONE, cast_id)]):
            wire.outbox._on_response(server, frames)
        try:
            caller.get(timeout=0)
        except queue.Empty:
            return list(handled), False
        return list(handled), True

    assert wire.loop.call(one_turn) == ([Kind.DONE], False)
    assert caller.get(timeout=WAIT).kind == Kind.REPLY


def test_a_server_not_accepting_rejects(wire):
    wire.loop.call(wire.inbox.set_accepting, False)
    wire.request(Kind.CALL)
    assert wire.next_response().kind == Kind.REJECT


# -- hostile or broken input ------------------------------------------------------------------


def test_bad_input_is_dropped_with_a_rate_limited_complaint_and_serving_goes_on(wire, caplog):
    dealer = raw_dealer(wire)
    with caplog.at_level(logging.WARNING, logger="zmqdriver"):
        dealer.send_multipart([b"one frame only"])
        dealer.send_multipart([b"not a header", b"{}"])
        dealer.send_multipart([protocol.encode_header(Kind.REPLY, protocol.new_msg_id()), b"{}"])
        # A good request behind them on the same connection: once it is served,
        # the three before it have been handled (no order holds across connections).
        body = {"exchange": "openstack", "topic": "t", "ctxt": {}, "message": {"method": "m"}}
        dealer.send_multipart(
            [
                protocol.encode_header(Kind.CALL, protocol.new_msg_id()),
                protocol.encode_body(body, protocol.Codec.JSON),
            ]
        )
        assert wire.next_incoming().message == {"method": "m"}
    assert "dropped a message of 2 frames (expected 3)" in caplog.text
    complaints = [r for r in caplog.records if "zmqdriver server" in r.getMessage()]
    assert len(complaints) == 1  # one line per _LOG_EVERY, with a count of the rest


@pytest.mark.parametrize(
    "body, error",
    [
        ({"exchange": "openstack", "topic": "t"}, "request has no message map"),
        (
            {"exchange": "openstack", "topic": "t", "message": {}, "ctxt": []},
            "request context is not a map",
        ),
        ({"exchange": "x", "topic": "other", "message": {}}, "reached the server of"),
    ],
)
def test_a_malformed_call_is_answered_with_a_failure_not_run(wire, body, error):
    wire.request(Kind.CALL, body=body)
    assert wire.next_response().kind == Kind.ACK
    reply = wire.next_response()
    assert reply.kind == Kind.REPLY
    assert error in protocol.decode_body(reply.body, reply.codec)["failure"]
    assert wire.incoming.empty()


def test_a_request_after_its_listener_stopped_is_logged(wire, caplog):
    wire.inbox.listener = None
    with caplog.at_level(logging.ERROR, logger="zmqdriver.rpc.server"):
        wire.request(Kind.CALL)
        wait_for(lambda: "arrived after its listener stopped" in caplog.text, "the error")


@pytest.fixture
def reply_senders(monkeypatch) -> list[str]:
    """Names of the threads that send the server's REPLYs, in order."""
    senders: list[str] = []
    real = server_module.send_frames

    def recording(socket, frames):
        if protocol.decode_header(frames[1]).kind == Kind.REPLY:
            senders.append(threading.current_thread().name)
        real(socket, frames)

    monkeypatch.setattr(server_module, "send_frames", recording)
    return senders


def test_an_idle_loop_is_not_woken_to_send_a_reply(wire, reply_senders):
    dealer = raw_dealer(wire)
    msg_id = raw_call(dealer)
    message = wire.next_incoming()
    assert protocol.decode_header(dealer.recv_multipart()[0]).kind == Kind.ACK
    assert eventually(lambda: wire.loop.waiting, WAIT, poll=0.001)
    message.reply("result")  # as oslo's executor thread does
    header = protocol.decode_header(dealer.recv_multipart()[0])
    assert (header.kind, header.msg_id) == (Kind.REPLY, msg_id)
    assert reply_senders == [threading.current_thread().name]


def test_a_busy_loop_sends_the_reply_itself(wire, reply_senders):
    dealer = raw_dealer(wire)
    msg_id = raw_call(dealer)
    message = wire.next_incoming()
    with loop_held(wire):
        message.reply("result")
    assert dealer.poll(WAIT * 1000)
    kinds = [
        protocol.decode_header(f[0]) for f in (dealer.recv_multipart(), dealer.recv_multipart())
    ]
    assert [(h.kind, h.msg_id) for h in kinds] == [(Kind.ACK, msg_id), (Kind.REPLY, msg_id)]
    assert reply_senders == ["test-io"]


def test_a_request_whose_signal_a_reply_took_is_still_read(monkeypatch):
    """A reply sent from an executor thread processes the socket's pending commands,
    a new request's arrival among them: the loop is told to look again, though it
    never sweeps here. (The loop is held busy, and said to be waiting, to make the
    race of a reply and an arrival happen every time.)"""
    wire = Wire(sweep_every=3600)
    try:
        dealer = raw_dealer(wire)
        raw_call(dealer)
        first = wire.next_incoming()
        # The loop ACKs a call after handing it over: let that turn end (its read
        # ends on the empty socket, so libzmq signals the next arrival) before the
        # loop is held, or it would be held in the middle of reading this socket.
        assert eventually(lambda: wire.loop.waiting, WAIT, poll=0.001)
        fd = wire.inbox._router.getsockopt(zmq.FD)
        with loop_held(wire):
            monkeypatch.setattr(IoLoop, "waiting", property(lambda loop: True))
            second_id = raw_call(dealer)
            # Its arrival signals the descriptor; select() only looks.
            assert select.select([fd], [], [], WAIT)[0]
            # libzmq looks at a socket's commands on send at most once a millisecond
            # or so (a TSC throttle): let that pass, so this send does look.
            time.sleep(0.01)
            first.reply("result")  # takes the arrival's signal
        second = wire.next_incoming()
        assert second.header.msg_id == second_id
    finally:
        wire.close()


def test_an_answer_after_the_loop_stopped_is_logged_as_lost(caplog):
    w = Wire()
    w.request(Kind.CALL)
    message = w.next_incoming()
    w.loop.stop()
    with caplog.at_level(logging.ERROR, logger="zmqdriver.rpc.server"):
        message.reply("late")
    assert "an answer to a client is lost" in caplog.text
    w.context.destroy(linger=0)


def test_no_free_port_names_the_options(wire):
    taken = wire.inbox.endpoint.port
    settings = BindSettings("127.0.0.1", "127.0.0.1", taken, taken + 1, retries=3)
    with pytest.raises(zmq.ZMQBindError, match="rpc_zmq_min_port, rpc_zmq_max_port"):
        wire.loop.call(wire._make_inbox, settings)


# -- the outbox's connections ---------------------------------------------------------------


@pytest.fixture
def dead_endpoint():
    """A port that refuses connections: bound (so nobody else takes it), never listening."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    yield Endpoint("127.0.0.1", holder.getsockname()[1])
    holder.close()


def test_a_refused_connection_reports_peer_lost_once_in_the_log(wire, caplog, dead_endpoint):
    server = dead_endpoint
    responses: queue.Queue = queue.Queue()
    ids = [protocol.new_msg_id() for _ in range(2)]
    with caplog.at_level(logging.WARNING, logger="zmqdriver"):
        for msg_id in ids:
            wire.outbox.expect(msg_id, responses.put)
            wire.outbox.send(server, msg_id, [b"x", b"y"])
        lost = {responses.get(timeout=WAIT).msg_id for _ in ids}
    assert lost == set(ids)
    assert server in wire.outbox.suspects
    assert caplog.text.count(f"connection to {server} lost") == 1


def test_a_refused_server_is_unreachable_until_its_address_accepts_connections(wire):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    server = Endpoint("127.0.0.1", holder.getsockname()[1])
    wire.outbox.send(server, protocol.new_msg_id(), [b"x"])
    wait_for(lambda: wire.outbox.suspects.unreachable(server), "the refusal")
    holder.listen()  # the kernel accepts and nothing answers: a stopped (SIGSTOP) process
    wait_for(lambda: not wire.outbox.suspects.unreachable(server), "the new connection")
    assert server in wire.outbox.suspects  # no handshake yet: calls still prefer others
    holder.close()


def test_a_server_back_on_its_address_is_reachable_and_trusted_again(wire):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    server = Endpoint("127.0.0.1", port)
    wire.outbox.send(server, protocol.new_msg_id(), [b"x"])
    wait_for(lambda: wire.outbox.suspects.unreachable(server), "the refusal")
    holder.close()
    router = wire.context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    wire.raw.append(router)
    router.bind(f"tcp://127.0.0.1:{port}")  # restarted on the same address
    wait_for(lambda: server not in wire.outbox.suspects, "the handshake")
    assert not wire.outbox.suspects.unreachable(server)


def silent_server(wire: Wire) -> tuple[zmq.Socket, Endpoint]:
    """A ROUTER that takes requests and never answers."""
    router = wire.context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    wire.raw.append(router)
    return router, Endpoint("127.0.0.1", router.bind_to_random_port("tcp://127.0.0.1"))


def test_drop_reports_everything_in_flight_but_the_callers_own(wire):
    router, server = silent_server(wire)
    responses: queue.Queue = queue.Queue()
    mine, other = protocol.new_msg_id(), protocol.new_msg_id()
    for msg_id in (mine, other):
        wire.outbox.expect(msg_id, responses.put)
        wire.outbox.send(server, msg_id, [b"x", b"y"])
    wire.outbox.drop(server, known=mine)
    first = responses.get(timeout=WAIT)
    assert (first.kind, first.msg_id) == (PEER_LOST, other)
    assert server in wire.outbox.suspects
    assert responses.empty()
    router.close()


def received(router: zmq.Socket) -> list[bytes]:
    """The next message ``router`` gets, without the sender's identity."""
    assert router.poll(WAIT * 1000), "nothing arrived"
    return router.recv_multipart()[1:]


def test_a_cast_on_a_connection_that_exists_leaves_from_the_callers_thread(wire):
    router, server = silent_server(wire)
    first, second = protocol.new_msg_id(), protocol.new_msg_id()
    wire.outbox.expect(first, wire.responses.put)
    wire.outbox.expect(second, wire.responses.put)
    wire.outbox.send(server, first, [b"first"])
    assert received(router) == [b"first"]  # through the loop, which connected
    with loop_held(wire):
        wire.outbox.send_here(server, second, [b"second"])
        assert received(router) == [b"second"]  # the loop is busy: this thread sent it
    wire.outbox.drop(server)
    lost = [wire.next_response() for _ in range(2)]
    assert {(r.kind, r.msg_id) for r in lost} == {(PEER_LOST, first), (PEER_LOST, second)}


def test_a_cast_behind_a_send_handed_to_the_loop_keeps_its_order(wire, monkeypatch):
    """The loop has the connection in its table but has not sent the first message yet."""
    router, server = silent_server(wire)
    connecting, go_on = threading.Event(), threading.Event()
    add_reader = wire.loop.add_reader

    def slow_add_reader(socket, callback, lock=None) -> None:
        connecting.set()
        go_on.wait(WAIT)
        add_reader(socket, callback, lock)

    monkeypatch.setattr(wire.loop, "add_reader", slow_add_reader)
    wire.outbox.send(server, protocol.new_msg_id(), [b"first"])
    assert connecting.wait(WAIT)
    wire.outbox.send_here(server, protocol.new_msg_id(), [b"second"])
    go_on.set()
    assert [received(router), received(router)] == [[b"first"], [b"second"]]


def test_a_cast_while_the_loop_uses_the_connections_is_handed_to_it_in_order(wire):
    """The caller does not wait for the lock the loop holds to read a connection: waiting
    cost it more than the hand-over (doc/benchmarks.md, ninth round)."""
    router, server = silent_server(wire)
    wire.outbox.send(server, protocol.new_msg_id(), [b"first"])
    assert received(router) == [b"first"]

    def cast(*messages: bytes) -> None:
        for message in messages:
            wire.outbox.send_here(server, protocol.new_msg_id(), [message])

    with wire.outbox._sending:  # as the loop holds it while it reads the connection
        caller = threading.Thread(target=cast, args=(b"second", b"third"))
        caller.start()
        caller.join(WAIT)
        assert not caller.is_alive()  # it handed them over instead of waiting
    cast(b"fourth")  # behind the two the loop has not sent yet
    assert [received(router) for _ in range(3)] == [[b"second"], [b"third"], [b"fourth"]]


def test_malformed_responses_are_dropped_and_logged(wire, caplog):
    router, server = silent_server(wire)
    msg_id = protocol.new_msg_id()
    wire.outbox.expect(msg_id, wire.responses.put)
    wire.outbox.send(server, msg_id, [protocol.encode_header(Kind.CALL, msg_id), b"{}"])
    identity = router.recv_multipart()[0]
    with caplog.at_level(logging.WARNING, logger="zmqdriver"):
        router.send_multipart([identity, b"a", b"b", b"c"])
        router.send_multipart([identity, b"not a header"])
        router.send_multipart([identity, protocol.encode_header(Kind.REPLY, msg_id), b"{}"])
        assert wire.next_response().kind == Kind.REPLY
    assert "a 3-frame response" in caplog.text
    assert "dropped response from" in caplog.text
    router.close()


def test_the_least_recently_used_idle_connection_makes_room(wire, dead_endpoint):
    outbox = Outbox(
        wire.loop, wire.context, linger_ms=0, heartbeats=Heartbeats(100, 300), max_connections=1
    )
    first, second = dead_endpoint, wire.inbox.endpoint
    outbox.send(first, protocol.new_msg_id(), [b"x"])
    wait_for(lambda: first in outbox._dealers, "the first connection")
    wire.loop.call(outbox._inflight.clear)  # nothing in flight on it: idle (loop-owned)
    outbox.send(second, protocol.new_msg_id(), [b"x"])
    wait_for(lambda: list(outbox._dealers) == [second], "the idle one closed")
    wire.loop.call(outbox.close)


def test_an_idle_connection_to_an_unreachable_server_is_closed_last(wire, dead_endpoint):
    outbox = Outbox(
        wire.loop, wire.context, linger_ms=0, heartbeats=Heartbeats(100, 300), max_connections=2
    )
    _, other = silent_server(wire)
    dead, alive = dead_endpoint, wire.inbox.endpoint
    outbox.send(dead, protocol.new_msg_id(), [b"x"])
    wait_for(lambda: outbox.suspects.unreachable(dead), "the refusal")
    outbox.send(alive, protocol.new_msg_id(), [b"x"])
    wait_for(lambda: alive in outbox._dealers, "the second connection")
    wire.loop.call(outbox._inflight.clear)  # both idle; the dead one least recently used
    outbox.send(other, protocol.new_msg_id(), [b"x"])
    wait_for(lambda: list(outbox._dealers) == [dead, other], "the live idle one closed")
    assert outbox.suspects.unreachable(dead)  # still watched: fanout keeps skipping it
    wire.loop.call(outbox.close)


@pytest.mark.parametrize(
    "event, value, curve, says",
    [
        (zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400, True, "refused this client's CURVE key"),
        (
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
            zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH,
            True,
            "this client uses CURVE, the server does not",
        ),
        (
            zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
            zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH,
            False,
            "the server requires CURVE",
        ),
        (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, 0x1000, False, "ZMTP protocol error 0x1000"),
        (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 5, True, "does not match its matchmaker record"),
        (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 5, False, "does the server require CURVE?"),
    ],
)
def test_handshake_failures_are_explained(event, value, curve, says):
    assert says in outbox_module.handshake_failure(event, value, curve)


# -- the listener -------------------------------------------------------------------------


def test_a_listener_registers_on_start_and_unregisters_then_rejects_on_stop(wire):
    matchmaker = MemoryMatchMaker()
    registrar = Registrar(matchmaker, expire=60.0, update=30.0)
    listener = RpcListener(wire.loop, wire.inbox, registrar, ["k"], 1, None)
    wire.loop.call(wire.inbox.set_accepting, False)
    listener.start(wire._collect)
    (record,) = matchmaker.records["k"]
    published = addressing.read_record(record)
    assert published.endpoint == wire.inbox.endpoint
    # Who published it, for zmqdriver-status.
    assert published.info.pid == os.getpid()
    wire.request(Kind.CALL)
    wire.next_incoming()
    listener.stop()
    assert matchmaker.records["k"] == set()
    wire.request(Kind.CALL)
    assert [wire.next_response().kind for _ in range(2)][-1] == Kind.REJECT
    listener.cleanup()
    listener.cleanup()  # idempotent
    registrar.stop()


def test_a_listener_whose_registration_fails_does_not_accept(wire):
    matchmaker = MemoryMatchMaker()

    def refuse(key, record, expire):
        raise RuntimeError("no registrations today")

    matchmaker.register = refuse
    registrar = Registrar(matchmaker, 60.0, 30.0)
    listener = RpcListener(wire.loop, wire.inbox, registrar, ["k"], 1, None)
    try:
        with pytest.raises(RuntimeError, match="no registrations today"):
            listener.start(wire._collect)
        wire.request(Kind.CALL)
        assert wire.next_response().kind == Kind.REJECT
    finally:
        registrar.stop()  # its thread would go on retrying for the rest of the run


def test_an_answer_queued_after_close_is_dropped_quietly(wire):
    wire.loop.call(wire.inbox.close)
    wire.loop.call(wire.inbox.send, [b"id", b"frame"])  # no error: the listener is gone


# -- pauses of the server's process ---------------------------------------------------------


class Paused:
    """A wire whose loop reads a hand-moved clock to notice pauses (threshold 0.2 s)."""

    def __init__(self, earlier_pauses: int = 0) -> None:
        self.clock = Clock()
        self.pauses = PauseWatch(0.2, clock=self.clock)
        self.pauses.generation = earlier_pauses  # the process paused before the server began
        self.wire = Wire(pauses=self.pauses)

    def pause(self, seconds: float = 10.0) -> None:
        """The process stops for ``seconds``; returns once the loop has noticed."""
        generation = self.pauses.generation
        self.clock.advance(seconds)
        wait_for(lambda: self.pauses.generation > generation, "the loop to notice the pause")
        # The count moves before the listeners run (in the loop thread): a round trip
        # through the loop returns once they have (the warning is logged by then).
        self.wire.loop.call(lambda: None)


@pytest.fixture
def paused(monkeypatch):
    monkeypatch.setattr(server_module, "FENCE_AFTER_PAUSE", 0.3)
    p = Paused()
    yield p
    p.wire.close()


def test_after_a_pause_requests_are_refused_then_served_again(paused, caplog):
    wire = paused.wire
    with caplog.at_level(logging.WARNING, logger="zmqdriver"):
        paused.pause()
    assert re.search(r"this process did not run for (9\.\d|10\.0)s", caplog.text)
    msg_id = wire.request(Kind.CAST)
    assert wire.next_response().kind == Kind.REJECT
    assert wire.incoming.empty()
    wait_for(lambda: time.monotonic() > wire.inbox._fenced_until, "the fence to end")
    wire.request(Kind.CAST, msg_id)  # the refused id was forgotten: it runs now
    wire.next_incoming().reply()
    assert wire.next_response().kind == Kind.DONE


def test_a_cast_that_ran_before_the_pause_answers_done_not_reject(paused):
    wire = paused.wire
    msg_id = wire.request(Kind.CAST)
    wire.next_incoming().reply()
    assert wire.next_response().kind == Kind.DONE
    paused.pause()
    wire.request(Kind.CAST, msg_id)
    assert wire.next_response().kind == Kind.DONE


def test_a_cast_running_through_a_pause_is_acknowledged_not_refused(paused):
    wire = paused.wire
    msg_id = wire.request(Kind.CAST)
    message = wire.next_incoming()
    assert wire.next_response().kind == Kind.ACK
    message.acknowledge()  # running when the process stops
    paused.pause()
    wire.request(Kind.CAST, msg_id)  # its sender sends it again during the fence
    assert wire.next_response().kind == Kind.ACK  # not REJECT: it would run twice
    message.reply()
    assert wire.next_response().kind == Kind.DONE
    wait_for(lambda: time.monotonic() > wire.inbox._fenced_until, "the fence to end")
    wire.request(Kind.CAST, msg_id)
    assert wire.next_response().kind == Kind.DONE  # it ran once
    assert wire.incoming.empty()


@pytest.mark.parametrize("kind", [Kind.CAST, Kind.CALL])
def test_a_request_queued_through_a_pause_is_refused_when_it_would_start(paused, kind):
    wire = paused.wire
    msg_id = wire.request(kind)
    message = wire.next_incoming()  # handed to the executor, not started
    wire.next_response()  # its ACK
    paused.pause()
    with pytest.raises(StaleRequest, match="waited through a pause"):
        message.acknowledge()
    assert wire.next_response().kind == Kind.REJECT
    wait_for(lambda: time.monotonic() > wire.inbox._fenced_until, "the fence to end")
    wire.request(kind, msg_id)  # forgotten: a resend runs
    wire.next_incoming().acknowledge()


def test_a_cast_refused_after_a_pause_keeps_no_later_done_waiting(paused, monkeypatch):
    monkeypatch.setattr(server_module, "CAST_ACK_DELAY", 60.0)  # no ACK timer to settle it
    wire = paused.wire
    dealer = raw_dealer(wire)
    raw_casts(dealer, 1)
    stale = wire.next_incoming()
    paused.pause()
    with pytest.raises(StaleRequest):
        stale.acknowledge()
    assert kinds_and_ids(dealer.recv_multipart())[0] == Kind.REJECT
    wait_for(lambda: time.monotonic() > wire.inbox._fenced_until, "the fence to end")
    ids = raw_casts(dealer, 1)
    message = wire.next_incoming()
    wait_for(lambda: wire.loop.waiting, "the loop to wait")
    message.reply()  # the only cast out: its DONE goes at once, not after the refused one
    assert [kinds_and_ids(f) for f in answers_until_done(dealer, ids)] == [(Kind.DONE, ids)]


def test_a_pause_the_loop_has_not_seen_yet_still_stops_a_start(paused):
    wire = paused.wire
    wire.request(Kind.CALL)
    message = wire.next_incoming()
    paused.clock.advance(10.0)  # executor threads may run before the loop notices
    with pytest.raises(StaleRequest):
        message.acknowledge()


def test_requests_started_before_the_pause_are_counted_in_the_warning(paused, caplog):
    wire = paused.wire
    wire.request(Kind.CALL)
    wire.next_incoming().acknowledge()  # running when the process stops
    with caplog.at_level(logging.WARNING, logger="zmqdriver"):
        paused.pause()
    assert "1 were running and may also have been run elsewhere" in caplog.text


@pytest.mark.parametrize("kind", [Kind.CAST, Kind.CALL])
def test_a_request_that_ends_before_the_loop_sees_the_pause_is_counted_as_running(
    paused, caplog, kind
):
    wire = paused.wire
    wire.request(kind)
    message = wire.next_incoming()
    message.acknowledge()  # running when the process stops
    generation = paused.pauses.generation
    with caplog.at_level(logging.WARNING, logger="zmqdriver"):
        with loop_held(wire):
            paused.clock.advance(10.0)
            message.reply()  # its executor thread resumed first and finished it
        wait_for(lambda: paused.pauses.generation > generation, "the loop to notice the pause")
        wire.loop.call(lambda: None)
    assert "1 were running and may also have been run elsewhere" in caplog.text


def test_requests_that_end_after_the_pause_was_reported_are_not_counted_again(paused, caplog):
    wire = paused.wire
    wire.request(Kind.CALL)
    message = wire.next_incoming()
    message.acknowledge()
    paused.pause()
    message.reply()
    with caplog.at_level(logging.WARNING, logger="zmqdriver"):
        paused.pause()
    assert "0 were running" in caplog.text


def test_a_server_begun_after_earlier_pauses_counts_only_what_ran_through_the_next(
    monkeypatch, caplog
):
    monkeypatch.setattr(server_module, "FENCE_AFTER_PAUSE", 0.3)
    paused = Paused(earlier_pauses=3)
    try:
        wire = paused.wire
        wire.request(Kind.CALL)
        message = wire.next_incoming()
        message.acknowledge()
        message.reply()  # before the pause: not running through it
        with caplog.at_level(logging.WARNING, logger="zmqdriver"):
            paused.pause()
        assert "0 were running" in caplog.text
    finally:
        paused.wire.close()


def test_a_pause_right_after_the_fence_check_counts_the_request_as_running(
    paused, caplog, monkeypatch
):
    wire = paused.wire
    wire.request(Kind.CALL)
    message = wire.next_incoming()
    check = paused.pauses.paused_since

    def check_then_stop(generation: int) -> bool:
        verdict = check(generation)
        paused.pause()  # the process stops just after the check: the request runs after it
        return verdict

    monkeypatch.setattr(paused.pauses, "paused_since", check_then_stop)
    with caplog.at_level(logging.WARNING, logger="zmqdriver"):
        message.acknowledge()
    assert "1 were running and may also have been run elsewhere" in caplog.text


def test_a_resend_taken_for_running_while_a_stale_start_is_refused_is_refused_too(paused):
    wire = paused.wire
    msg_id = wire.request(Kind.CAST)
    message = wire.next_incoming()
    wire.next_response()  # its ACK
    paused.pause()
    resend = raw_dealer(wire)
    # The executor counts it as running just before it finds the pause; a resend
    # read by the loop in that instant is acknowledged as running (its DONE owed).
    wire.inbox._running.add(msg_id)
    resend.send_multipart([protocol.encode_header(Kind.CAST, msg_id), b"{}"])
    assert protocol.decode_header(resend.recv_multipart()[0]).kind == Kind.ACK
    with pytest.raises(StaleRequest):
        message.acknowledge()
    assert wire.next_response().kind == Kind.REJECT
    assert resend.poll(WAIT * 1000), "the resend's sender heard nothing"
    assert protocol.decode_header(resend.recv_multipart()[0]).kind == Kind.REJECT


def test_oslo_logs_a_refused_start_as_one_info_line(caplog):
    oslo_log = logging.getLogger("oslo_messaging.rpc.server")
    with caplog.at_level(logging.INFO, logger="oslo_messaging.rpc.server"):
        try:
            raise StaleRequest("request x waited through a pause of this process; refused")
        except StaleRequest:
            oslo_log.exception("Can not acknowledge message. Skip processing")
    (record,) = caplog.records
    assert record.levelno == logging.INFO and record.exc_info is None
    assert record.getMessage() == (
        "zmqdriver: request x waited through a pause of this process; refused"
    )
