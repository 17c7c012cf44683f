"""Outbox: the client's DEALER sockets, one per server endpoint, owned by the I/O loop.

Requests leave through the DEALER connected to the chosen server; that
server's ACK, HEARTBEAT, REPLY and REJECT frames come back on the same
socket and are routed to the waiting caller by message id.

The outbox also watches each connection (ZeroMQ heartbeats and socket
monitor events): when a connection is refused or lost, every request still
waiting on that server gets a ``PEER_LOST`` response at once, and the
server is *suspect* for a while, so senders prefer other servers. While the
connection stays down the server is also *unreachable*, and fanout skips it.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import parse_monitor_message

from zmqdriver import metrics, protocol
from zmqdriver.addressing import Endpoint
from zmqdriver.eventloop import IoLoop, native_lock
from zmqdriver.eventloop.loop import send_frames
from zmqdriver.security import KeyPair
from zmqdriver.throttle import Throttle

LOG = logging.getLogger(__name__)

# Not a wire kind: the outbox's own news that the connection to a server is gone.
PEER_LOST = "peer-lost"

# How long a server that failed us is avoided when others are available.
SUSPECT_FOR = 10.0
# A lost connection not re-established within this long makes its server unreachable.
# libzmq reconnects every 0.1-0.2 s and the kernel of a live host accepts at once, even
# for a stopped (SIGSTOP) process; a crashed or cut-off host does not answer at all.
RECONNECT_GRACE = 1.0

# Responses after which a server owes nothing more for a request.
_FINAL_KINDS = frozenset(
    {protocol.Kind.REPLY, protocol.Kind.REJECT, protocol.Kind.DONE, protocol.Kind.PONG}
)

_DEAD_EVENTS = zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
_ALIVE_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED
# Whether anything accepts connections at the server's address: a TCP connection was
# established (a stopped process's kernel accepts too), or an attempt failed (refused).
_TCP_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_CLOSED
# The security handshake failed: CURVE on one side only, a key the server
# refused, or a server key that does not match the record. libzmq reports the
# disconnect right after; these say why.
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_WATCHED_EVENTS = _DEAD_EVENTS | _ALIVE_EVENTS | _TCP_EVENTS | _HANDSHAKE_FAILED

# Seconds between two log lines about failed handshakes with one server.
_LOG_HANDSHAKE_EVERY = 10.0


@dataclass(frozen=True)
class Response:
    """One frame a server sent back about a request (or PEER_LOST)."""

    kind: protocol.Kind | str
    msg_id: bytes
    endpoint: Endpoint
    codec: protocol.Codec = protocol.Codec.JSON
    body: bytes | None = None
    reason: str | None = None  # PEER_LOST only: why, when it is not just a lost connection
    # PEER_LOST only: the server refused this client's CURVE key. No resend can
    # succeed until an operator allows the key, so the request should not retry.
    refused: bool = False


class Link:
    """What a monitor event says about a connection (``ConnectionNews.state``)."""

    ALIVE = "alive"  # a handshake completed: the server serves
    REACHED = "reached"  # a TCP connection was established (a stopped process's kernel accepts too)
    REFUSED = "refused"  # a connection attempt failed: nothing listens
    LOST = "lost"  # the connection is gone (or its handshake failed): requests on it are lost


@dataclass(frozen=True)
class ConnectionNews:
    state: str  # a Link value
    event: int  # the zmq.EVENT_* it came from
    reason: str | None = None  # a failed handshake: why, for people
    refused: bool = False  # the server refused this client's CURVE key

    @property
    def final(self) -> bool:
        """libzmq gives the connection up for good: after a handshake refused by
        the server (ZAP) or failed on the protocol, it does not reconnect."""
        return self.event in (zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)


def connection_news(frames: list[bytes], curve: KeyPair | None) -> ConnectionNews:
    """Read one message of a DEALER's monitor socket (``_WATCHED_EVENTS``)."""
    message = parse_monitor_message(frames)
    event = message["event"]
    if event & _ALIVE_EVENTS:
        return ConnectionNews(Link.ALIVE, event)
    if event & _TCP_EVENTS:
        # Requests are not lost here: a refused attempt is followed by
        # CONNECT_RETRIED, which reports them.
        return ConnectionNews(Link.REACHED if event == zmq.EVENT_CONNECTED else Link.REFUSED, event)
    if not event & _HANDSHAKE_FAILED:
        return ConnectionNews(Link.LOST, event)
    public_key = curve.public if curve is not None else None
    reason = handshake_failure(event, message["value"], curve is not None, public_key=public_key)
    return ConnectionNews(
        Link.LOST, event, reason, refused=event == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    )


class Waiter:
    """Collects the responses to one request.

    A caller reads them with ``get`` while it waits (ACK, REPLY, ...). A
    cast's responses go to the keeper's ``handler`` instead, as they come.
    """

    def __init__(self, handler: Callable[[Response], None] | None = None) -> None:
        # SimpleQueue: one per call, and put/get run in C (queue.Queue builds three
        # Conditions here and notifies in Python). Under eventlet it is the
        # pure-Python one on green locks, so callers there still block green.
        self._queue: queue.SimpleQueue | None = queue.SimpleQueue() if handler is None else None
        self._handler = handler
        # A caller is not woken for an ACK (the reply usually follows at once):
        # it looks here when its ACK deadline passes.
        self.acked_by: Endpoint | None = None

    def put(self, response: Response) -> None:
        if self._handler is not None:
            self._handler(response)
        else:
            self._queue.put(response)

    @property
    def has_handler(self) -> bool:
        return self._handler is not None

    def take_ack(self, endpoint: Endpoint) -> bool:
        """Note an ACK for a waiting caller without waking it; False if a handler wants it."""
        if self.has_handler:
            return False
        self.acked_by = endpoint
        return True

    def get(self, timeout: float | None = None) -> Response:
        """The next response; raises queue.Empty after ``timeout`` seconds."""
        return self._queue.get(timeout=timeout)


class Waiters:
    """Who waits for the responses to which message id.

    Written by caller threads (``expect``/``forget``), read by the loop
    (``route``); single dict operations are atomic, so no lock is needed.
    ``deliver`` runs a completion on the application side (the runtime's):
    a handler's at once, and a waiting caller's through ``wake`` if given,
    which may defer it (see ``Outbox``).
    """

    def __init__(
        self, deliver: Callable[..., None], wake: Callable[..., None] | None = None
    ) -> None:
        self._deliver = deliver
        self._wake = wake or deliver
        self._by_id: dict[bytes, Waiter] = {}

    def __contains__(self, msg_id: bytes) -> bool:
        return msg_id in self._by_id

    def expect(self, msg_id: bytes, handler: Callable[[Response], None] | None = None) -> Waiter:
        waiter = Waiter(handler)
        self._by_id[msg_id] = waiter
        return waiter

    def forget(self, msg_id: bytes) -> None:
        self._by_id.pop(msg_id, None)

    def route(self, response: Response) -> None:
        """Hand ``response`` to whoever waits for its message (nobody: it is dropped)."""
        waiter = self._by_id.get(response.msg_id)
        if waiter is None:
            # The caller gave up (timeout) or it is a duplicate ACK.
            if response.kind == protocol.Kind.REPLY:
                metrics.incr("replies_late")
            return
        if response.kind == protocol.Kind.ACK and waiter.take_ack(response.endpoint):
            return
        if waiter.has_handler:
            self._deliver(waiter.put, response)
        else:
            self._wake(waiter.put, response)

    def lost(
        self, endpoint: Endpoint, msg_ids, reason: str | None = None, refused: bool = False
    ) -> None:
        """Tell the waiters of ``msg_ids`` that ``endpoint``'s connection is gone."""
        for msg_id in msg_ids:
            self.route(Response(PEER_LOST, msg_id, endpoint, reason=reason, refused=refused))


class Suspects:
    """Servers that recently failed us, and those we cannot reach now.

    A *suspect* failed us within SUSPECT_FOR seconds (silence, a lost or refused
    connection): calls and casts choose it only when no other server is left.

    An *unreachable* server is one whose connection is down for good, as far as
    we can see: a connection attempt was refused (nothing listens: the process is
    gone), or the connection was lost and not re-established within
    RECONNECT_GRACE (the host is gone). Fanout sends it nothing. It is reachable
    again as soon as a TCP connection to it is established, so a server that was
    only stopped (SIGSTOP), or one that came back on the same address, is used
    again at once. Once we close the connection ourselves we stop watching it,
    so what we knew holds for SUSPECT_FOR more seconds only.

    Marked by callers (a silent server) and the loop (connection events); read by
    caller threads. Single dict operations are atomic, so readers take no lock;
    writers take ``_lock`` so that pruning expired entries cannot drop a renewed one.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = native_lock()  # the loop thread writes here too
        self._until: dict[Endpoint, float] = {}
        # Unreachable from when, until when (math.inf while its connection is watched).
        self._down: dict[Endpoint, tuple[float, float]] = {}
        self._next_prune = 0.0

    def mark(self, endpoint: Endpoint) -> None:
        with self._lock:
            self._until[endpoint] = self._clock() + SUSPECT_FOR

    def lost(self, endpoint: Endpoint) -> None:
        """The connection to ``endpoint`` is gone; unreachable unless re-established soon."""
        self.mark(endpoint)
        with self._lock:
            if not self._watched_down(endpoint):  # a repeated loss does not postpone it
                self._down[endpoint] = (self._clock() + RECONNECT_GRACE, math.inf)

    def refused(self, endpoint: Endpoint) -> None:
        """An attempt to connect to ``endpoint`` failed: unreachable now."""
        self.mark(endpoint)
        with self._lock:
            self._down[endpoint] = (self._clock(), math.inf)

    def reached(self, endpoint: Endpoint) -> None:
        """A TCP connection to ``endpoint`` was established: it may be slow, not gone."""
        with self._lock:
            self._down.pop(endpoint, None)

    def unwatched(self, endpoint: Endpoint) -> None:
        """We closed the connection to ``endpoint``: what we knew goes stale."""
        with self._lock:
            down = self._down.get(endpoint)
            if down is not None:
                self._down[endpoint] = (down[0], self._clock() + SUSPECT_FOR)

    def clear(self, endpoint: Endpoint) -> None:
        """``endpoint`` completed a handshake: it serves again."""
        with self._lock:
            self._until.pop(endpoint, None)
            self._down.pop(endpoint, None)

    def note(self, endpoint: Endpoint, news: ConnectionNews) -> None:
        """What a monitor event of our connection to ``endpoint`` says."""
        if news.state == Link.ALIVE:
            self.clear(endpoint)
        elif news.state == Link.REACHED:
            self.reached(endpoint)
        elif news.state == Link.REFUSED:
            self.refused(endpoint)
        else:
            self.lost(endpoint)

    def any(self) -> bool:
        """Whether any server may be suspect or unreachable now: when not, choosing
        skips asking about each server (every cast and call chooses)."""
        if not (self._until or self._down):
            return False
        now = self._clock()
        if now >= self._next_prune:  # what has expired goes, once a second at most
            self._next_prune = now + 1.0
            with self._lock:
                self._until = {e: until for e, until in self._until.items() if until > now}
                self._down = {e: down for e, down in self._down.items() if down[1] > now}
        return bool(self._until or self._down)

    def unreachable(self, endpoint: Endpoint) -> bool:
        since, until = self._down.get(endpoint, (math.inf, math.inf))
        return since <= self._clock() < until

    def _watched_down(self, endpoint: Endpoint) -> bool:
        """Known lost or refused on a connection we still watch."""
        down = self._down.get(endpoint)
        return down is not None and down[1] == math.inf

    def __contains__(self, endpoint: Endpoint) -> bool:
        until = self._until.get(endpoint)
        return until is not None and until > self._clock()


@dataclass(frozen=True)
class Heartbeats:
    """ZeroMQ connection heartbeats, in milliseconds (0 disables them)."""

    interval_ms: int
    timeout_ms: int


class Outbox:
    """The client's connections: a DEALER per server, created, read and closed in the loop thread.

    Caller threads register what they wait for (``expect``), hand sends to the
    loop (``send``) or send casts themselves (``send_here``) and may ``drop`` a
    connection; everything else runs in the loop: reading responses, watching
    connections, closing idle ones.
    """

    def __init__(
        self,
        loop: IoLoop,
        context: zmq.Context,
        *,
        linger_ms: int,
        heartbeats: Heartbeats,
        curve: KeyPair | None = None,
        max_connections: int = 0,
        direct_sends: bool = True,
    ) -> None:
        """``direct_sends``: ``send_here`` may send from the calling thread (native threads;
        a green thread must not wait on a lock the loop holds)."""
        self._loop = loop
        self._context = context
        self._linger_ms = linger_ms
        self._heartbeats = heartbeats
        self._curve = curve  # this client's key pair when CURVE is on
        self._max_connections = max_connections  # 0: no limit
        self.waiters = Waiters(loop.runtime.deliver, wake=self._wake_caller)
        self.suspects = Suspects()
        # The loop creates, reads and closes the DEALERs; a caller may send on one (send_here).
        # Changes to these two, and every use of a DEALER, under _sending.
        self._dealers: collections.OrderedDict[Endpoint, zmq.Socket] = collections.OrderedDict()
        self._inflight: dict[Endpoint, set[bytes]] = {}
        self._sending = native_lock()
        self._direct_sends = direct_sends
        # Sends handed to the loop and not made yet, per server: counted up under
        # _handing, down under both (so a direct send that holds _sending sees it).
        self._handed: collections.Counter[Endpoint] = collections.Counter()
        self._handing = native_lock()
        # Loop thread only.
        self._monitors: dict[Endpoint, zmq.Socket] = {}
        # Senders retry a failing server many times: say so once per outage,
        # and a failed handshake once per _LOG_HANDSHAKE_EVERY.
        self._lost_logged = Throttle(every=math.inf)
        self._handshake_logged = Throttle(every=_LOG_HANDSHAKE_EVERY)

    # -- caller threads ----------------------------------------------------------

    def expect(self, msg_id: bytes, handler: Callable[[Response], None] | None = None) -> Waiter:
        """Start collecting responses to ``msg_id``; call ``forget`` when done.

        With ``handler`` every response is passed to it (in the loop thread,
        or the hub when green) instead of being queued for ``get``.
        """
        return self.waiters.expect(msg_id, handler)

    def forget(self, msg_id: bytes) -> None:
        self.waiters.forget(msg_id)

    def after_reading(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the loop is done reading this turn (now, outside the loop
        thread): for a response's handler whose work wakes other Python threads."""
        self._loop.after_reading(fn)

    def send(self, endpoint: Endpoint, msg_id: bytes, frames: list[bytes]) -> None:
        """Have the loop send ``frames`` to ``endpoint``; a failure goes to ``msg_id``'s waiter.

        Calls go this way: with several under way, callers taking turns at the
        connection's lock cost more than the loop's hand-over (calls/s of 8
        threads fell by about 15 % when they sent themselves).
        """
        with self._handing:
            self._handed[endpoint] += 1
        self._loop.submit(self._send, endpoint, msg_id, frames)

    def send_here(self, endpoint: Endpoint, msg_id: bytes, frames: list[bytes]) -> None:
        """``send``, but from this thread when the connection exists, no earlier send to
        that server still waits in the loop (one thread's messages keep their order) and
        no other thread uses the connections at this moment.

        For casts: handed to the loop, a burst of them waited for the GIL the
        caller held, and left together only once the caller blocked on its
        window, so the server idled while the caller cast, and the caller while
        the server ran them (doc/benchmarks.md, eighth round).
        """
        if not (self._direct_sends and self._try_send_here(endpoint, msg_id, frames)):
            self.send(endpoint, msg_id, frames)

    def _try_send_here(self, endpoint: Endpoint, msg_id: bytes, frames: list[bytes]) -> bool:
        """Send on ``endpoint``'s DEALER from this thread; False: the loop must send it."""
        if not self._sending.acquire(blocking=False):
            # Another thread, mostly the loop reading, uses the connections now: waiting
            # cost both a context switch; the loop sends this as soon as it can.
            return False
        try:
            dealer = self._dealers.get(endpoint)
            if dealer is None or self._handed[endpoint]:
                return False
            try:
                send_frames(dealer, frames)
            except zmq.ZMQError:
                return False  # the loop tries again, and reports a failure
            self._note_sent(endpoint, msg_id)
            self._loop.recheck(dealer)
        finally:
            self._sending.release()
        return True

    def drop(self, endpoint: Endpoint, known: bytes | None = None) -> None:
        """Close the connection to ``endpoint``, discarding what it has queued.

        Used when a server did not acknowledge in time: a request stuck in the
        socket must not reach the server later, after it was sent elsewhere.
        Every other request in flight on it gets PEER_LOST; ``known`` is the
        caller's own, which it handles itself.
        """
        self.suspects.mark(endpoint)
        self._loop.submit(self._drop, endpoint, known)

    # -- loop thread ---------------------------------------------------------------

    def _wake_caller(self, put: Callable[[Response], None], response: Response) -> None:
        """Hand ``response`` to its waiting caller once the loop is done reading.

        Woken in the middle of a turn, the caller thread preempted the loop only
        to wait for its GIL; answers to several callers read in one turn now wake
        them after it (calls/s of 8 threads up by a fifth, doc/benchmarks.md).
        """
        self._loop.at_turn_end(self._loop.runtime.deliver, put, response)

    def _dealer(self, endpoint: Endpoint) -> zmq.Socket:
        dealer = self._dealers.get(endpoint)
        if dealer is not None:
            return dealer
        self._make_room()
        dealer, monitor = self.connect(endpoint)
        with self._sending:
            self._dealers[endpoint] = dealer
        self._monitors[endpoint] = monitor
        self._loop.add_reader(
            dealer, lambda frames: self._on_response(endpoint, frames), lock=self._sending
        )
        self._loop.add_reader(monitor, lambda frames: self._on_event(endpoint, frames))
        return dealer

    def connect(self, endpoint: Endpoint) -> tuple[zmq.Socket, zmq.Socket]:
        """A DEALER connecting to ``endpoint`` and its monitor socket, owned by the
        calling thread (the loop's own, or a caller's: see rpc/lines.py)."""
        dealer = self._context.socket(zmq.DEALER)
        try:
            self._configure(dealer, endpoint)
            monitor = dealer.get_monitor_socket(_WATCHED_EVENTS)
        except zmq.ZMQError:
            dealer.close(linger=0)
            raise
        dealer.connect(endpoint.uri)
        return dealer, monitor

    def _make_room(self) -> None:
        """Close the least recently used idle connection when at zmq_max_connections.

        Each connection costs memory, a file descriptor and heartbeats. One with
        requests in flight is kept: its answers would be lost; if every one is
        busy the limit is exceeded for a while. One to an unreachable server goes
        last: it is how we know that server is dead (closed, we would send it
        copies again SUSPECT_FOR seconds later, until its record expires).
        """
        if not self._max_connections or len(self._dealers) < self._max_connections:
            return
        with self._sending:  # a caller's send moves its connection to the end
            idle = [endpoint for endpoint in self._dealers if not self._inflight.get(endpoint)]
        # The first idle one, unless unreachable; then the first of those.
        victim = min(idle, key=self.suspects.unreachable, default=None)
        if victim is not None:
            self._drop_gracefully(victim)

    def _configure(self, dealer: zmq.Socket, endpoint: Endpoint) -> None:
        dealer.setsockopt(zmq.LINGER, self._linger_ms)
        if self._heartbeats.interval_ms:
            dealer.setsockopt(zmq.HEARTBEAT_IVL, self._heartbeats.interval_ms)
            dealer.setsockopt(zmq.HEARTBEAT_TIMEOUT, self._heartbeats.timeout_ms)
        if self._curve is not None:
            # The server's key comes from its matchmaker record (the Directory
            # skips records without one when CURVE is on).
            dealer.setsockopt(zmq.CURVE_SERVERKEY, endpoint.key.encode())
            dealer.setsockopt(zmq.CURVE_PUBLICKEY, self._curve.public.encode())
            dealer.setsockopt(zmq.CURVE_SECRETKEY, self._curve.secret.encode())

    def _send(self, endpoint: Endpoint, msg_id: bytes, frames: list[bytes]) -> None:
        failure = None
        try:
            dealer = self._dealer(endpoint)  # before the lock: making room may close one
        except zmq.ZMQError as exc:
            dealer, failure = None, exc
        with self._sending:
            with self._handing:
                self._handed[endpoint] -= 1
                if not self._handed[endpoint]:
                    del self._handed[endpoint]
            if dealer is not None:
                try:
                    self._loop.send(dealer, frames)
                except zmq.ZMQError as exc:
                    failure = exc
                else:
                    self._note_sent(endpoint, msg_id)
        if failure is not None:
            self._loop.runtime.log(
                logging.WARNING, "zmqdriver: send to %s failed: %s", endpoint, failure
            )
            self.waiters.lost(endpoint, [msg_id])

    def _note_sent(self, endpoint: Endpoint, msg_id: bytes) -> None:
        """``msg_id`` is in flight on ``endpoint``, its connection the most recently used
        (under _sending)."""
        self._dealers.move_to_end(endpoint)
        inflight = self._inflight.setdefault(endpoint, set())
        inflight.add(msg_id)
        if len(inflight) > 1024:  # callers that timed out never said goodbye
            inflight.difference_update([m for m in inflight if m not in self.waiters])

    def _drop(self, endpoint: Endpoint, known: bytes | None = None) -> None:
        # Once out of _dealers, no caller can reach the DEALER: closed without the lock.
        with self._sending:
            dealer = self._dealers.pop(endpoint, None)
            lost = self._inflight.pop(endpoint, set())
        monitor = self._monitors.pop(endpoint, None)
        self.suspects.unwatched(endpoint)
        # What was sent on this connection will get no answer through it.
        self.waiters.lost(endpoint, lost - {known})
        for socket in (dealer, monitor):
            if socket is not None:
                self._loop.remove_reader(socket)
        if dealer is not None:
            dealer.disable_monitor()
            dealer.close(linger=0)
        if monitor is not None:
            monitor.close(linger=0)

    def _on_event(self, endpoint: Endpoint, frames: list[bytes]) -> None:
        news = self.read_event(frames)
        self.suspects.note(endpoint, news)
        if news.state == Link.ALIVE:
            self._lost_logged.forget(endpoint)  # a later loss is a new outage
        if news.state != Link.LOST:
            return
        dealer = self._dealers.get(endpoint)
        if dealer is not None:
            # Answers that arrived before the loss (a DONE, a REPLY) still count:
            # without them those requests would be sent again elsewhere.
            self._loop.drain(dealer)
        with self._sending:
            lost = self._inflight.pop(endpoint, set())
        self.report_loss(endpoint, news, len(lost))
        self.waiters.lost(endpoint, lost, news.reason, news.refused)
        if news.final:
            # A socket that never reconnects would swallow every later send
            # (a cast retried once the key is allowed): a fresh one tries anew.
            # Not closed inside its own monitor's read: in a task of its own.
            self._loop.submit(self._drop, endpoint)

    def read_event(self, frames: list[bytes]) -> ConnectionNews:
        """What a message of one of our connections' monitors says (any thread)."""
        return connection_news(frames, self._curve)

    def report_loss(self, endpoint: Endpoint, news: ConnectionNews, in_flight: int) -> None:
        """Log and count a lost connection (any thread) with ``in_flight`` requests on it."""
        if news.reason is not None and self._handshake_logged.admit(endpoint) is not None:
            self._loop.runtime.log(
                logging.WARNING, "zmqdriver: handshake with %s failed: %s", endpoint, news.reason
            )
        # A refused connection is retried every reconnect interval: count the
        # losses that mattered (requests in flight) and real disconnections.
        if in_flight or news.event == zmq.EVENT_DISCONNECTED:
            metrics.incr("connections_lost")
        if in_flight and news.reason is None and self._lost_logged.admit(endpoint) is not None:
            self._loop.runtime.log(
                logging.WARNING,
                "zmqdriver: connection to %s lost (%s) with %d requests in flight",
                endpoint,
                zmq.Event(news.event).name,
                in_flight,
            )

    def _on_response(self, endpoint: Endpoint, frames: list[bytes]) -> None:
        try:
            header, body = decode_response(frames)
            msg_ids = [header.msg_id]
            if header.kind == protocol.Kind.DONE and body is not None:
                # One DONE for several casts (protocol.encode_done): each is done.
                msg_ids += protocol.more_done_ids(body)
                body = None
        except protocol.ProtocolError as exc:
            self._loop.runtime.log(
                logging.WARNING, "zmqdriver: dropped response from %s: %s", endpoint, exc
            )
            return
        if header.kind in _FINAL_KINDS:
            with self._sending:  # a caller may be adding to it
                self._inflight.get(endpoint, set()).difference_update(msg_ids)
        for msg_id in msg_ids:
            self.waiters.route(Response(header.kind, msg_id, endpoint, header.codec, body))

    def close(self) -> None:
        """Close every DEALER; runs in the loop thread."""
        for endpoint in list(self._dealers):
            self._drop_gracefully(endpoint)

    def _drop_gracefully(self, endpoint: Endpoint) -> None:
        with self._sending:
            dealer = self._dealers.pop(endpoint)
            self._inflight.pop(endpoint, None)
        monitor = self._monitors.pop(endpoint)
        self.suspects.unwatched(endpoint)
        self._loop.remove_reader(dealer)
        self._loop.remove_reader(monitor)
        dealer.disable_monitor()
        monitor.close(linger=0)
        dealer.close()


def decode_response(frames: list[bytes]) -> tuple[protocol.Header, bytes | None]:
    """A server's response: its header and body (None without one).

    >>> decode_response([b"x", b"y", b"z"])
    Traceback (most recent call last):
    ...
    zmqdriver.protocol.ProtocolError: a 3-frame response (1 or 2 expected)
    """
    if len(frames) not in (1, 2):
        raise protocol.ProtocolError(f"a {len(frames)}-frame response (1 or 2 expected)")
    return protocol.decode_header(frames[0]), frames[1] if len(frames) == 2 else None


def handshake_failure(event: int, value: int, curve: bool, *, public_key: str | None = None) -> str:
    """Say, for people, why a security handshake failed (a monitor event and its value).

    ``public_key`` (this client's, Z85) is named in a refusal: it is what the
    operator has to allow.
    """
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        key = f" {public_key}" if public_key else ""
        return (
            f"the server refused this client's CURVE key{key} (ZAP status {value}); add this "
            "client's public key file to the server's zmq_curve_allowed_keys_dir"
        )
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            if curve:
                return "security mismatch: this client uses CURVE, the server does not"
            return (
                "security mismatch: the server requires CURVE and this client has "
                "zmq_curve_enabled off"
            )
        return f"ZMTP protocol error {value:#x} during the security handshake"
    if curve:
        # What a client sees when the server's key is not the one it expects.
        return (
            "the CURVE handshake failed: the server's key does not match its matchmaker record"
            f" (or the server is not a CURVE server) (errno {value})"
        )
    # Without CURVE here, the likeliest cause is a server that requires it
    # (libzmq reports either this or the mechanism mismatch above).
    return f"the handshake failed (errno {value}); does the server require CURVE?"
