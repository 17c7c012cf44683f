"""Caller lines against a bare ROUTER: a real DEALER per thread, its monitor read by that thread.

The "server" is a ROUTER the test drives frame by frame, so each answer, each
loss and each stale reply arrives exactly when the test says.
"""

from __future__ import annotations

import gc
import queue
import threading
import time

import pytest
import zmq

from harness.wait import wait_until
from tests.unit.rpc.fakes import Clock
from zmqdriver import metrics, protocol
from zmqdriver.addressing import Endpoint
from zmqdriver.eventloop.loop import IoLoop, LoopStopped
from zmqdriver.eventloop.native import NativeRuntime
from zmqdriver.rpc import lines as lines_module
from zmqdriver.rpc.lines import CallerLine, CallerLines
from zmqdriver.rpc.outbox import PEER_LOST, Heartbeats, Outbox

Kind = protocol.Kind
WAIT = 10.0


class Server:
    """A ROUTER on a free loopback port that answers as the test tells it."""

    def __init__(self, context: zmq.Context) -> None:
        self.router = context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = Endpoint("127.0.0.1", port)

    def take(self) -> tuple[bytes, bytes]:
        """The next request: (connection identity, message id)."""
        assert self.router.poll(WAIT * 1000), "no request arrived"
        identity, header, _body = self.router.recv_multipart()
        return identity, protocol.decode_header(header).msg_id

    def answer(self, identity: bytes, kind: Kind, msg_id: bytes, body: bytes = b"") -> None:
        frames = [identity, protocol.encode_header(kind, msg_id)]
        self.router.send_multipart(frames + ([body] if body else []))

    def close(self) -> None:
        self.router.close(linger=0)


class Lines:
    def __init__(self, per_thread: int = 4) -> None:
        self.context = zmq.Context()
        self.loop = IoLoop(NativeRuntime(), name="test-io")
        self.outbox = Outbox(self.loop, self.context, linger_ms=0, heartbeats=Heartbeats(0, 0))
        self.clock = Clock()
        self.lines = CallerLines(self.outbox, per_thread, clock=self.clock)
        self.servers: list[Server] = []

    def server(self) -> Server:
        server = Server(self.context)
        self.servers.append(server)
        return server

    def close(self) -> None:
        self.lines.close()
        for server in self.servers:
            server.close()
        self.loop.call(self.outbox.close)
        self.loop.stop()
        self.context.term()  # waits for ever if a line was left open


@pytest.fixture
def w():
    lines = Lines()
    yield lines
    lines.close()


def request(msg_id: bytes) -> list[bytes]:
    return [protocol.encode_header(Kind.CALL, msg_id), b"{}"]


def send(line, server: Server) -> bytes:
    msg_id = protocol.new_msg_id()
    line.expect(msg_id)
    line.send(server.endpoint, msg_id, request(msg_id))
    return msg_id


def own_line(w: Lines, endpoint: Endpoint) -> CallerLine:
    """This thread's line to ``endpoint``: opened at its second call (see lines.py)."""
    w.lines.line_for(endpoint)
    line = w.lines.line_for(endpoint)
    assert line is not None
    return line


def call_taken(w: Lines) -> tuple[Server, CallerLine, bytes, bytes]:
    """A call sent on a new line and read by its server: (server, line, msg_id, identity)."""
    server = w.server()
    line = own_line(w, server.endpoint)
    msg_id = send(line, server)
    identity, _ = server.take()
    return server, line, msg_id, identity


def test_the_ack_is_noted_and_the_reply_returned(w):
    server, line, msg_id, identity = call_taken(w)
    server.answer(identity, Kind.ACK, msg_id)
    server.answer(identity, Kind.REPLY, msg_id, b'{"result": 1}')
    response = line.get(WAIT)
    assert (response.kind, response.msg_id, response.body) == (Kind.REPLY, msg_id, b'{"result": 1}')
    assert line.acked_by == server.endpoint
    assert w.lines.line_for(server.endpoint) is line  # kept for the thread's next call


def test_a_reply_to_a_call_that_gave_up_is_skipped_and_counted(w):
    server, line, gave_up, identity = call_taken(w)
    with pytest.raises(queue.Empty):
        line.get(0.01)
    line.forget(gave_up)
    msg_id = send(line, server)
    server.take()
    late_before = metrics.snapshot()["replies_late"]
    server.answer(identity, Kind.REPLY, gave_up, b'{"result": "late"}')
    server.answer(identity, Kind.REPLY, msg_id, b'{"result": "mine"}')
    assert line.get(WAIT).body == b'{"result": "mine"}'
    assert metrics.snapshot()["replies_late"] == late_before + 1


def test_a_connection_lost_while_the_call_waits_is_its_peer_lost(w):
    server, line, msg_id, _ = call_taken(w)
    server.close()
    response = line.get(WAIT)
    assert (response.kind, response.msg_id, response.endpoint) == (PEER_LOST, msg_id, line.endpoint)
    assert line.closed  # nobody would read its monitor between calls
    assert server.endpoint in w.outbox.suspects


def test_an_answer_that_came_before_the_loss_still_counts(w):
    server, line, msg_id, identity = call_taken(w)
    server.answer(identity, Kind.HEARTBEAT, msg_id)
    server.close()
    wait_until(lambda: line._monitor.poll(0), what="the loss reported")
    assert line.get(WAIT).kind == Kind.HEARTBEAT
    assert line.get(WAIT).kind == PEER_LOST


def test_a_line_found_down_at_its_next_use_is_replaced(w):
    server, first, msg_id, identity = call_taken(w)
    server.answer(identity, Kind.REPLY, msg_id)
    first.get(WAIT)
    first.forget(msg_id)
    server.close()  # between two calls: nobody waits on the line
    wait_until(lambda: w.lines.line_for(server.endpoint) is not first, what="the line found down")
    assert first.closed


def test_drop_closes_the_line_and_marks_the_server(w):
    server = w.server()
    line = own_line(w, server.endpoint)
    send(line, server)
    line.drop(server.endpoint)
    assert line.closed
    assert server.endpoint in w.outbox.suspects
    with pytest.raises(LoopStopped):
        line.send(server.endpoint, b"x" * 16, request(b"x" * 16))


def test_a_thread_keeps_at_most_per_thread_lines_and_reuses_only_an_idle_one():
    w = Lines(per_thread=1)
    try:
        a, b = w.server(), w.server()
        line_a = own_line(w, a.endpoint)
        w.lines.line_for(b.endpoint)
        assert w.lines.line_for(b.endpoint) is None  # the caller goes through the outbox
        w.clock.advance(lines_module.REUSE_AFTER)
        w.lines.line_for(b.endpoint)
        line_b = w.lines.line_for(b.endpoint)
        assert line_b is not None and line_b.endpoint == b.endpoint
        assert line_a.closed
        assert w.lines.count() == 1
    finally:
        w.close()


def test_each_thread_has_its_own_lines_closed_when_it_ends(w):
    server = w.server()
    mine = own_line(w, server.endpoint)
    theirs: list = []
    thread = threading.Thread(target=lambda: theirs.append(own_line(w, server.endpoint)))
    thread.start()
    thread.join(WAIT)
    assert theirs[0] is not mine and theirs[0].endpoint == server.endpoint
    gc.collect()
    wait_until(lambda: theirs[0].closed, what="the ended thread's line closed")
    assert w.lines.count() == 1
    assert not mine.closed


def test_a_line_is_opened_for_a_second_call_soon_after_the_first(w):
    server = w.server()
    assert w.lines.line_for(server.endpoint) is None  # the first: through the outbox
    w.clock.advance(lines_module.REUSE_AFTER)
    assert w.lines.line_for(server.endpoint) is None  # a while later: still a first
    w.clock.advance(lines_module.REUSE_AFTER / 2)
    line = w.lines.line_for(server.endpoint)
    assert line is not None and line.endpoint == server.endpoint
    assert w.lines.line_for(server.endpoint) is line


def test_no_lines_when_there_may_be_none(w):
    server = w.server()
    assert CallerLines(w.outbox, 0).line_for(server.endpoint) is None
    w.lines.close()
    assert w.lines.line_for(server.endpoint) is None


def test_closing_wakes_a_thread_waiting_on_its_line_and_the_context_terminates(w):
    server, line, _, _ = call_taken(w)
    outcome: queue.Queue = queue.Queue()

    def wait_for_reply() -> None:
        try:
            outcome.put(line.get(None))
        except LoopStopped as exc:
            outcome.put(exc)

    waiting = threading.Thread(target=wait_for_reply)
    waiting.start()
    w.lines.close()  # the line is busy: its own thread will close it
    terminated = threading.Thread(target=w.context.term)
    terminated.start()
    assert isinstance(outcome.get(timeout=WAIT), LoopStopped)
    assert line.closed
    server.close()  # the last socket of the context
    terminated.join(WAIT)
    assert not terminated.is_alive()
    w.context = zmq.Context()  # for the fixture's teardown


def test_a_wait_for_an_answer_ends_no_sooner_than_its_timeout(w):
    # The caller tells a silent server from its own deadline by the clock after
    # the wait: a wait cut short by rounding looked like silence (a resend after
    # the call's timeout, and "no server" instead of "had not acknowledged").
    _, line, _, _ = call_taken(w)
    for _ in range(20):
        started = time.monotonic()
        with pytest.raises(queue.Empty):
            line.get(0.0105)
        assert time.monotonic() - started >= 0.0105
