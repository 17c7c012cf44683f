"""CastKeeper: looks after casts after ``cast()`` has returned.

``cast()`` returns once a server acknowledged the cast; from then on the
keeper owns it until that server reports it ran (DONE). If the connection to
the server is lost first (it died with the cast queued), the cast goes to
another server, with the same message id, so a server that already has it
drops it.

Casts sent while no server exists are held, in order, and delivered when one
registers. Everything is bounded (count and age); what is dropped is logged
with a count.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from zmqdriver import protocol
from zmqdriver.addressing import Endpoint
from zmqdriver.rpc.outbox import PEER_LOST, Outbox, Response, Waiter

LOG = logging.getLogger(__name__)

_TICK = 0.1  # seconds between the keeper thread's checks
_RETRY_HELD_EVERY = 0.5
_FORGET_AFTER = 600.0  # a cast without DONE for this long: its DONE was lost, stop tracking


@dataclass(frozen=True)
class Limits:
    hold_time: float
    hold_max: int
    track_max: int


@dataclass
class _Tracked:
    request: object  # rpc.client._Request
    server: Endpoint
    since: float = field(default_factory=time.monotonic)


class CastKeeper:
    def __init__(self, outbox: Outbox, limits: Limits) -> None:
        self._outbox = outbox
        self._limits = limits
        self._resend: Callable[[object], None] | None = None
        self._tracked: dict[bytes, _Tracked] = {}
        self._held: collections.OrderedDict[bytes, object] = collections.OrderedDict()
        self._held_lock = threading.Lock()
        self._orphans: queue.Queue = queue.Queue()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._warned_full = 0.0
        self._last_held_retry = 0.0

    def start(self, resend: Callable[[object], None]) -> None:
        """``resend(request)`` sends a cast again; it calls ``watch``/``hold`` itself."""
        self._resend = resend

    # -- caller threads ----------------------------------------------------------

    def has_room(self) -> bool:
        if len(self._tracked) < self._limits.track_max:
            return True
        self._warn_full("watched", self._limits.track_max, "zmq_cast_track_max")
        return False

    def watch(self, request, server: Endpoint, waiter: Waiter) -> None:
        """Own a cast ``server`` acknowledged until it reports DONE."""
        self._tracked[request.msg_id] = _Tracked(request, server)
        waiter.hand_over(lambda response: self._on_response(request.msg_id, response))
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
        with self._held_lock:
            return any(request.key == key for request in self._held.values())

    def close(self) -> None:
        self._stopped = True
        self._orphans.put(None)
        if self._thread is not None:
            self._thread.join(10)
        if self._held:
            LOG.error(
                "Transport closed with %d casts still waiting for a server; they are lost",
                len(self._held),
            )

    # -- responses (I/O loop or hub) ---------------------------------------------

    def _on_response(self, msg_id: bytes, response: Response) -> None:
        tracked = self._tracked.get(msg_id)
        if tracked is None:
            return
        if response.kind == protocol.Kind.DONE:
            self._forget(msg_id)
        elif response.kind == PEER_LOST and response.endpoint == tracked.server:
            LOG.warning(
                "Server of cast %s was lost before running it; sending it elsewhere",
                protocol.msg_id_str(msg_id),
            )
            self._orphan(msg_id, tracked)

    def _orphan(self, msg_id: bytes, tracked: _Tracked) -> None:
        self._forget(msg_id)
        tracked.request.tried.add(tracked.server)
        self._orphans.put(tracked.request)

    def _forget(self, msg_id: bytes) -> None:
        self._tracked.pop(msg_id, None)
        self._outbox.forget(msg_id)

    # -- the keeper thread -------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="zmqdriver-casts", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped:
            try:
                orphan = self._orphans.get(timeout=_TICK)
            except queue.Empty:
                orphan = None
            if self._stopped:
                return
            if orphan is not None:
                self._deliver(orphan)
            if time.monotonic() - self._last_held_retry >= _RETRY_HELD_EVERY:
                self._last_held_retry = time.monotonic()
                self._retry_held()
                self._forget_stale()

    def _deliver(self, request) -> None:
        try:
            self._resend(request)
        except Exception as exc:  # the keeper must outlive any one cast
            LOG.error(
                "Cast %s could not be sent again: %s", protocol.msg_id_str(request.msg_id), exc
            )

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
        for msg_id, tracked in list(self._tracked.items()):
            if now - tracked.since > _FORGET_AFTER:
                self._forget(msg_id)

    def _warn_full(self, what: str, limit: int, option: str) -> None:
        now = time.monotonic()
        if now - self._warned_full > 10.0:
            self._warned_full = now
            LOG.warning("%d casts already %s (%s); not keeping more", limit, what, option)
