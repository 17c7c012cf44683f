"""Caller lines: a calling thread's own connections to the servers it calls.

A call through the outbox crosses threads twice: the caller hands its request
to the I/O loop, and the loop hands the reply back (44 + 39 µs of a call of
about 0.5 ms here; doc/benchmarks.md). A thread with a DEALER of its own to
the server sends on it and waits on it itself, and libzmq wakes it directly.

A line keeps the outbox's promises for the one call on it at a time:

* answers are routed by message id: the call's ACK is noted without waking
  anyone (``acked_by``), its HEARTBEAT, REJECT and REPLY are returned by
  ``get``, and answers to calls that gave up earlier are skipped;
* the same thread reads the connection's monitor: a lost or refused
  connection or a failed handshake is the call's ``PEER_LOST``, with the
  outbox's reason and refusal, and the suspects hear every event as they do
  from the outbox;
* ``drop`` closes it, so a request stuck in it never arrives late.

Between calls nobody reads a line's monitor, so what it told the suspects
could stay true for ever (a server marked unreachable, and never reached
again). Hence the invariant here: **a line whose connection is down is
closed**, found so while its call waits or when its thread next uses it
(``catch_up``); closing ends the watch (``Suspects.unwatched``), so the
suspicion expires as it does for a connection the outbox drops.

Opened by a thread that calls a server again within ``REUSE_AFTER`` seconds:
its first call goes through the outbox, so a thread that calls once and ends
(a thread per request) does not open a connection per call.

Bounded: at most ``per_thread`` lines per thread (``zmq_caller_sockets``). A
thread that calls more servers reaches the others through the outbox, and
gives its least recently used line to a new server only once that line has
been idle for ``REUSE_AFTER`` seconds, so a thread calling many servers in
turn does not open a connection per call. Native threads only: under
eventlet every call goes through the outbox (a green thread must not block
its OS thread in ``zmq_poll``).

A thread's lines are closed when it ends (they are garbage then) or when
the driver closes (``CallerLines.close``). A line in use at that moment is
closed by its own thread: blocked in ``zmq_poll``, libzmq wakes it with
ETERM once the context terminates; otherwise it finds the line retired when
its operation ends.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
import weakref
from collections.abc import Callable

import zmq

from zmqdriver import metrics, protocol
from zmqdriver.addressing import Endpoint
from zmqdriver.eventloop import native_lock
from zmqdriver.eventloop.loop import LoopStopped, readable, recv_frames, send_frames
from zmqdriver.rpc.outbox import (
    PEER_LOST,
    ConnectionNews,
    Link,
    Outbox,
    Response,
    decode_response,
)

LOG = logging.getLogger(__name__)

# A thread's least recently used line goes to another server only after this long idle.
REUSE_AFTER = 10.0
# Servers a thread called without a line that it remembers (for calls_again).
_CALLED_MAX = 64
# How long the driver's close waits for a line its thread is using (see the docstring).
_CLOSE_WAIT = 1.0

_POLLIN = int(zmq.POLLIN)


class CallerLine:
    """One thread's DEALER to one server; also the waiter of the call on it.

    Has the outbox's interface for the Caller (``expect``, ``send``, ``drop``,
    ``forget``) and a ``Waiter``'s (``get``, ``acked_by``). Only its thread uses
    it, except ``retire`` (the driver closing).
    """

    def __init__(self, endpoint: Endpoint, outbox: Outbox) -> None:
        self.endpoint = endpoint
        self._outbox = outbox
        self._dealer, self._monitor = outbox.connect(endpoint)
        self._lock = native_lock()  # its thread's operation, or retire's close
        self._msg_id: bytes | None = None
        self._news: Response | None = None  # PEER_LOST not yet returned by get
        self._down = False  # the last monitor event said the connection is down
        self._retired = False
        self.closed = False
        self.acked_by: Endpoint | None = None
        self.used_at = 0.0

    # -- the outbox's interface ----------------------------------------------------

    def expect(self, msg_id: bytes, handler: Callable | None = None) -> CallerLine:
        self._msg_id, self._news, self.acked_by = msg_id, None, None
        return self

    def forget(self, msg_id: bytes) -> None:
        self._msg_id = None

    def send(self, endpoint: Endpoint, msg_id: bytes, frames: list[bytes]) -> None:
        with self._operation():
            try:
                send_frames(self._dealer, frames)
            except zmq.ZMQError as exc:  # the server's queue is full: it is not reading
                LOG.warning("zmqdriver: send to %s failed: %s", endpoint, exc)
                self._news = Response(PEER_LOST, msg_id, endpoint)

    def drop(self, endpoint: Endpoint, known: bytes | None = None) -> None:
        """Close the connection, discarding a request stuck in it."""
        self._outbox.suspects.mark(endpoint)
        with self._lock:
            self._close()

    # -- the waiter's interface ----------------------------------------------------

    def get(self, timeout: float | None = None) -> Response:
        """The call's next response; raises queue.Empty after ``timeout`` seconds."""
        if self._news is not None:  # a failed send, or a loss behind the last answer
            news, self._news = self._news, None
            return news
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._operation():
            try:
                return self._next(deadline)
            except zmq.ContextTerminated:
                self._close()
                raise LoopStopped("zmqdriver transport is closed") from None

    def _next(self, deadline: float | None) -> Response:
        # A poll before every read, and one message per read: a read that finds
        # nothing costs more than a poll (7 against 3 µs here), and the poll
        # blocks until there is something to read anyway. The monitor's events
        # from before the call were read when its line was chosen (``usable``).
        polled = [(self._dealer, _POLLIN), (self._monitor, _POLLIN)]
        while True:
            ready = zmq.zmq_poll(polled, _wait_ms(deadline))
            if any(socket is self._dealer for socket, _ in ready):
                response = self._read_answer()
                if response is not None:
                    return response
            elif ready:  # the monitor alone: answers that came first are read
                lost = self.catch_up()
                if lost is not None:
                    return self._lost_while_waiting(lost)
            elif deadline is not None and time.monotonic() >= deadline:
                raise queue.Empty

    def _read_answer(self) -> Response | None:
        """The next message, if it is an answer to our call that wakes the caller."""
        try:
            frames = recv_frames(self._dealer)
        except zmq.Again:
            return None
        try:
            header, body = decode_response(frames)
        except protocol.ProtocolError as exc:
            LOG.warning("zmqdriver: dropped response from %s: %s", self.endpoint, exc)
            return None
        if header.msg_id != self._msg_id:
            if header.kind == protocol.Kind.REPLY:
                metrics.incr("replies_late")  # its caller gave up
            return None
        if header.kind == protocol.Kind.ACK:
            self.acked_by = self.endpoint  # nobody is woken for an ACK
            return None
        return Response(header.kind, header.msg_id, self.endpoint, header.codec, body)

    def _lost_while_waiting(self, lost: ConnectionNews) -> Response:
        """The call's answer if it came before the loss (as in the outbox), else its
        PEER_LOST; the loss is returned by the next ``get`` after an answer."""
        response = None
        while response is None and readable(self._dealer):
            response = self._read_answer()
        news = self._lost(lost)  # closes the line
        if response is None:
            return news
        self._news = news
        return response

    def _lost(self, news: ConnectionNews) -> Response:
        """The connection went down while a call waited: its PEER_LOST (the line closes)."""
        self._outbox.report_loss(self.endpoint, news, 1)
        self._close()  # down: see the invariant in the docstring
        return Response(
            PEER_LOST, self._msg_id, self.endpoint, reason=news.reason, refused=news.refused
        )

    # -- the watch ---------------------------------------------------------------------

    def catch_up(self) -> ConnectionNews | None:
        """Read every waiting monitor event (the suspects hear each); the first
        loss among them, if any, even if the connection is back since."""
        first_loss = None
        while True:
            try:
                frames = recv_frames(self._monitor)
            except zmq.Again:
                return first_loss
            news = self._outbox.read_event(frames)
            self._outbox.suspects.note(self.endpoint, news)
            self._down = news.state in (Link.LOST, Link.REFUSED)
            if news.state == Link.LOST and first_loss is None:
                first_loss = news

    def usable(self) -> bool:
        """Whether the line can take a call now (a line found down is closed here)."""
        if self.closed:
            return False
        with self._lock:
            # Asked first: a read that finds nothing costs more (see _next).
            if readable(self._monitor):
                lost = self.catch_up()
                if lost is not None:
                    self._outbox.report_loss(self.endpoint, lost, 0)
            if self._down:
                self._close()
        return not self.closed

    # -- closing -----------------------------------------------------------------------

    def retire(self) -> None:
        """Close from another thread (the driver closing): see the docstring."""
        self._retired = True
        if self._lock.acquire(timeout=_CLOSE_WAIT):
            try:
                self._close()
            finally:
                self._lock.release()

    def _operation(self):
        return _Operation(self)

    def _close(self) -> None:
        """Close both sockets (holding ``_lock``, or as the only user)."""
        if self.closed:
            return
        self.closed = True
        self._outbox.suspects.unwatched(self.endpoint)
        try:
            self._dealer.disable_monitor()
        except zmq.ZMQError:
            pass  # the context is terminating: closing is all that is left
        self._monitor.close(linger=0)
        self._dealer.close(linger=0)


def _wait_ms(deadline: float | None) -> int:
    """zmq_poll's timeout until ``deadline``: -1 for none, 0 once it has passed.

    Rounded up: a wait that ends before the deadline would look like a silent
    server to a caller whose own timeout has not yet passed.
    """
    if deadline is None:
        return -1
    return max(0, math.ceil((deadline - time.monotonic()) * 1000))


class _Operation:
    """A line's operation in its thread: under its lock, on an open line, and
    closing it afterwards if the driver retired it meanwhile."""

    __slots__ = ("_line",)

    def __init__(self, line: CallerLine) -> None:
        self._line = line

    def __enter__(self) -> None:
        self._line._lock.acquire()
        if self._line.closed:
            self._line._lock.release()
            raise LoopStopped("zmqdriver: this connection is closed")

    def __exit__(self, *exc_info) -> None:
        line = self._line
        try:
            if line._retired:
                line._close()
        finally:
            line._lock.release()


class _ThreadLines:
    """One thread's lines, least recently used first, and the servers it called
    without one (when, most recent last)."""

    def __init__(self) -> None:
        self.by_endpoint: collections.OrderedDict[Endpoint, CallerLine] = collections.OrderedDict()
        self.called: collections.OrderedDict[Endpoint, float] = collections.OrderedDict()

    def calls_again(self, endpoint: Endpoint, now: float) -> bool:
        """Note a call to ``endpoint``; whether the last one was within REUSE_AFTER."""
        last = self.called.pop(endpoint, None)
        self.called[endpoint] = now
        if len(self.called) > _CALLED_MAX:
            self.called.popitem(last=False)
        return last is not None and now - last < REUSE_AFTER


def _close_all(by_endpoint: dict[Endpoint, CallerLine]) -> None:
    """Close a thread's lines: it ended, or the driver is closing (see ``retire``)."""
    for line in list(by_endpoint.values()):
        line.retire()


class CallerLines:
    """Every calling thread's lines (see the module docstring)."""

    def __init__(
        self,
        outbox: Outbox,
        per_thread: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._outbox = outbox
        self._per_thread = per_thread
        self._clock = clock
        self._local = threading.local()
        self._threads: weakref.WeakSet[_ThreadLines] = weakref.WeakSet()
        self._threads_lock = native_lock()
        self._closed = False

    def line_for(self, endpoint: Endpoint) -> CallerLine | None:
        """This thread's line to ``endpoint``, or None: go through the outbox."""
        if self._closed or not self._per_thread:
            return None
        mine = self._mine()
        lines = mine.by_endpoint
        line = lines.get(endpoint)
        if line is not None and not line.usable():
            del lines[endpoint]
            line = None
        if line is None:
            if not mine.calls_again(endpoint, self._clock()):
                return None  # a thread that calls a server once a while needs no line
            line = self._open(lines, endpoint)
            if line is None:
                return None
        lines.move_to_end(endpoint)
        line.used_at = self._clock()
        return line

    def count(self) -> int:
        """Lines open now, in every thread."""
        with self._threads_lock:
            threads = list(self._threads)
        # list() copies another thread's dict in one step (no switch to that thread).
        return sum(
            not line.closed for lines in threads for line in list(lines.by_endpoint.values())
        )

    def close(self) -> None:
        """Close every thread's lines (the driver is closing)."""
        self._closed = True
        with self._threads_lock:
            threads = list(self._threads)
        for lines in threads:
            _close_all(lines.by_endpoint)

    def _mine(self) -> _ThreadLines:
        lines = getattr(self._local, "lines", None)
        if lines is None:
            lines = self._local.lines = _ThreadLines()
            weakref.finalize(lines, _close_all, lines.by_endpoint)
            with self._threads_lock:
                self._threads.add(lines)
        return lines

    def _open(
        self, lines: collections.OrderedDict[Endpoint, CallerLine], endpoint: Endpoint
    ) -> CallerLine | None:
        for closed in [e for e, line in lines.items() if line.closed]:
            del lines[closed]
        if len(lines) >= self._per_thread and not self._reuse_oldest(lines):
            return None
        try:
            line = CallerLine(endpoint, self._outbox)
        except zmq.ZMQError as exc:  # out of sockets or descriptors: the outbox still works
            LOG.debug("zmqdriver: no line of its own to %s: %s", endpoint, exc)
            return None
        lines[endpoint] = line
        return line

    def _reuse_oldest(self, lines: collections.OrderedDict[Endpoint, CallerLine]) -> bool:
        """Close the least recently used line if it has been idle for REUSE_AFTER."""
        endpoint, oldest = next(iter(lines.items()))
        if self._clock() - oldest.used_at < REUSE_AFTER:
            return False
        oldest.retire()
        del lines[endpoint]
        return True
