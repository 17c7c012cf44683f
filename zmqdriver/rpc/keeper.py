"""CastKeeper: sees every cast through, from ``cast()`` to the server's DONE.

``cast()`` hands the cast to a server and returns at once; the keeper
watches it until that server reports it ran (DONE). A cast the server does
not acknowledge within ``rpc_ack_timeout_base``, or whose connection is lost
before its DONE, goes to another server with the same message id, so a
server that already has it drops it.

Each server has a window: at most ``zmq_cast_window`` casts sent to it and
not yet DONE. A sender that fills it waits for room. The window is what
pipelines casts (many in flight, no round trip per cast), and it bounds what
a server killed mid-stream can leave ambiguous: only casts in its window can
have run without their DONE arriving, and be run again elsewhere.

Casts sent while no server exists are held, in order, and delivered when one
registers. Everything is bounded (count and age); what is dropped is logged
with a count.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from zmqdriver import protocol
from zmqdriver.addressing import Endpoint
from zmqdriver.rpc.outbox import PEER_LOST, Outbox, Response

LOG = logging.getLogger(__name__)

_TICK = 0.1  # seconds between the keeper thread's checks
_RETRY_HELD_EVERY = 0.5
_FORGET_AFTER = 600.0  # a cast without DONE for this long: its DONE was lost, stop tracking
_ROOM_WAIT = 0.5  # a sender waiting for room re-checks this often


@dataclass(frozen=True)
class Limits:
    hold_time: float
    hold_max: int
    track_max: int
    window: int
    ack_timeout: float


@dataclass
class _Copy:
    """One cast on its way to one server (a fanout cast has one copy per server)."""

    request: object  # rpc.client._Request
    server: Endpoint
    fanout: bool
    ack_due: float | None  # None once the server acknowledged it
    since: float = field(default_factory=time.monotonic)


class CastKeeper:
    def __init__(self, outbox: Outbox, limits: Limits) -> None:
        self._outbox = outbox
        self._limits = limits
        self._resend: Callable[[object], None] | None = None
        # Copies on their way, by (message id, server); guarded by _room.
        self._copies: dict[tuple[bytes, Endpoint], _Copy] = {}
        self._per_server: collections.Counter[Endpoint] = collections.Counter()
        self._per_msg: collections.Counter[bytes] = collections.Counter()
        self._room = threading.Condition()
        self._held: collections.OrderedDict[bytes, object] = collections.OrderedDict()
        self._held_lock = threading.Lock()
        self._orphans: queue.Queue = queue.Queue()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._warned_full = 0.0
        self._last_held_retry = 0.0

    def start(self, resend: Callable[[object], None]) -> None:
        """``resend(request)`` sends a cast again; it calls ``send``/``hold`` itself."""
        self._resend = resend

    # -- caller threads ----------------------------------------------------------

    def wait_for_room(self, server: Endpoint) -> None:
        """Block while ``server``'s window (or the process-wide limit) is full."""
        since = warned = time.monotonic()
        with self._room:
            while not self._stopped and not self._has_room(server):
                self._room.wait(_ROOM_WAIT)
                if time.monotonic() - warned > 2 * self._limits.ack_timeout:
                    warned = time.monotonic()
                    LOG.warning(
                        "cast() has waited %.0fs for room: %d casts on their way to %s "
                        "(zmq_cast_window=%d), %d in all (zmq_cast_track_max=%d)",
                        warned - since,
                        self._per_server[server],
                        server,
                        self._limits.window,
                        len(self._copies),
                        self._limits.track_max,
                    )

    def send(self, request, servers: list[Endpoint], fanout: bool = False) -> None:
        """Send a cast (a copy to each of ``servers``) and watch it until DONE.

        Does not wait for room: callers do that first (``wait_for_room``); the
        keeper's own resends may exceed a window rather than stall.
        """
        due = time.monotonic() + self._limits.ack_timeout
        with self._room:
            fresh = self._per_msg[request.msg_id] == 0
            for server in servers:
                self._copies[(request.msg_id, server)] = _Copy(request, server, fanout, due)
                self._per_server[server] += 1
                self._per_msg[request.msg_id] += 1
        if fresh:
            self._outbox.expect(request.msg_id, self._response_handler(request.msg_id))
        for server in servers:
            self._outbox.send(server, request.msg_id, request.frames)
        self._ensure_thread()

    def hold(self, request) -> bool:
        """Keep a cast until a server exists; False when the hold is full."""
        with self._held_lock:
            if len(self._held) >= self._limits.hold_max:
                self._warn_full("held", self._limits.hold_max, "zmq_cast_hold_max")
                return False
            request.held_since = getattr(request, "held_since", None) or time.monotonic()
            self._held[request.msg_id] = request
        self._ensure_thread()
        return True

    def holding(self, key: str) -> bool:
        """Casts to ``key`` are waiting: a new one must queue behind them (order)."""
        if not self._held:
            return False
        with self._held_lock:
            return any(request.key == key for request in self._held.values())

    def close(self) -> None:
        self._stopped = True
        self._orphans.put(None)
        with self._room:
            self._room.notify_all()
        if self._thread is not None:
            self._thread.join(10)
        if self._held:
            LOG.error(
                "Transport closed with %d casts still waiting for a server; they are lost",
                len(self._held),
            )

    def _has_room(self, server: Endpoint) -> bool:
        if len(self._copies) >= self._limits.track_max:
            self._warn_full("in flight", self._limits.track_max, "zmq_cast_track_max")
            return False
        return self._per_server[server] < self._limits.window

    # -- responses (I/O loop or hub) ---------------------------------------------

    def _response_handler(self, msg_id: bytes) -> Callable[[Response], None]:
        return lambda response: self._on_response(msg_id, response)

    def _on_response(self, msg_id: bytes, response: Response) -> None:
        kind = response.kind
        if kind == protocol.Kind.ACK:
            copy = self._copies.get((msg_id, response.endpoint))
            if copy is not None:
                copy.ack_due = None
        elif kind == protocol.Kind.DONE:
            self._finish(msg_id, response.endpoint)
        elif kind in (PEER_LOST, protocol.Kind.REJECT):
            copy = self._finish(msg_id, response.endpoint)
            if copy is not None:
                self._redirect(copy, "was lost" if kind == PEER_LOST else "is stopping")

    def _finish(self, msg_id: bytes, server: Endpoint) -> _Copy | None:
        """Stop watching one copy; returns it, or None if it was not watched."""
        with self._room:
            copy = self._copies.pop((msg_id, server), None)
            if copy is None:
                return None
            self._per_server[server] -= 1
            if self._per_server[server] <= 0:
                del self._per_server[server]
            self._per_msg[msg_id] -= 1
            last = self._per_msg[msg_id] <= 0
            if last:
                del self._per_msg[msg_id]
            self._room.notify_all()
        if last:
            self._outbox.forget(msg_id)
        return copy

    def _redirect(self, copy: _Copy, why: str) -> None:
        msg_id = protocol.msg_id_str(copy.request.msg_id)
        if copy.fanout:
            # A fanout copy belongs to that server only: nobody else may run it.
            LOG.warning(
                "Server %s of fanout cast %s %s before running it", copy.server, msg_id, why
            )
            return
        LOG.warning(
            "Server %s of cast %s %s before running it; sending it elsewhere",
            copy.server,
            msg_id,
            why,
        )
        copy.request.tried.add(copy.server)
        self._orphans.put(copy.request)

    # -- the keeper thread -------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="zmqdriver-casts", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        last_check = 0.0
        while not self._stopped:
            try:
                orphan = self._orphans.get(timeout=_TICK)
            except queue.Empty:
                orphan = None
            if self._stopped:
                return
            if orphan is not None:
                self._deliver(orphan)
            now = time.monotonic()
            if now - last_check >= _TICK:
                last_check = now
                self._check_acks(now)
            if now - self._last_held_retry >= _RETRY_HELD_EVERY:
                self._last_held_retry = now
                self._retry_held()
                self._forget_stale()

    def _deliver(self, request) -> None:
        try:
            self._resend(request)
        except Exception as exc:  # the keeper must outlive any one cast
            LOG.error(
                "Cast %s could not be sent again: %s", protocol.msg_id_str(request.msg_id), exc
            )

    def _check_acks(self, now: float) -> None:
        """Servers that left a cast unacknowledged too long lose their connection.

        Dropping the connection discards what still sits in its socket (so it
        cannot reach that server after the casts went elsewhere) and reports
        every request on it as lost, which sends its casts elsewhere.
        """
        with self._room:
            silent = {
                copy.server
                for copy in self._copies.values()
                if copy.ack_due is not None and copy.ack_due <= now
            }
            for copy in self._copies.values():
                if copy.server in silent:
                    copy.ack_due = math.inf  # its PEER_LOST is on the way: do not drop twice
        for server in silent:
            LOG.warning(
                "%s did not acknowledge a cast within %ss; sending its casts elsewhere",
                server,
                self._limits.ack_timeout,
            )
            self._outbox.drop(server)

    def _retry_held(self) -> None:
        with self._held_lock:
            held = list(self._held.values())
            self._held.clear()
        expired = 0
        blocked: set[str] = set()
        for request in held:
            if time.monotonic() - request.held_since > self._limits.hold_time:
                expired += 1
                continue
            if request.key in blocked:  # keep order behind an earlier held cast
                self.hold(request)
                continue
            self._deliver(request)
            if request.msg_id in self._held:
                blocked.add(request.key)
        if expired:
            LOG.error(
                "Dropped %d casts that found no server within zmq_cast_hold_time=%ss",
                expired,
                self._limits.hold_time,
            )

    def _forget_stale(self) -> None:
        now = time.monotonic()
        with self._room:
            stale = [key for key, copy in self._copies.items() if now - copy.since > _FORGET_AFTER]
        for msg_id, server in stale:
            self._finish(msg_id, server)

    def _warn_full(self, what: str, limit: int, option: str) -> None:
        now = time.monotonic()
        if now - self._warned_full > 10.0:
            self._warned_full = now
            LOG.warning("%d casts already %s (%s); waiting for room", limit, what, option)
