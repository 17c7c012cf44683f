"""Casts, from ``cast()`` to the server's DONE: one owner, the ``CastKeeper``.

``cast()`` hands a cast to the keeper and returns once it is sent (or held).
The keeper chooses the server, sends, watches the cast until that server
reports it ran (DONE), and sends it again elsewhere, with the same message
id so a server that already has it drops it, when:

* the server does not acknowledge it within ``rpc_ack_timeout_base`` (the
  keeper then drops the connection, which discards what still sits in the
  socket and reports everything on it as lost);
* the connection is lost before the DONE (PEER_LOST), or the server REJECTs
  it because it is stopping.

Each server has a window: at most ``zmq_cast_window`` casts sent to it and
not yet DONE. A caller that fills it waits for room (the keeper's own
resends never wait: they may exceed a window rather than stall). The window
is what pipelines casts (many in flight, no round trip per cast), and it
bounds what a server killed mid-stream can leave ambiguous: only casts in
its window can have run without their DONE arriving, and run again elsewhere.

Casts sent while no server exists are held, in order per target, and sent
when one registers. A fanout cast sends a copy to every server registered
now that we can reach (not one whose connection is down: a killed server's
record outlives it by up to ``zmq_target_expire``); a copy belongs to its
server and is never sent elsewhere. Everything is bounded (count and age);
what is dropped is logged with a count.

Threads: ``cast``/``fanout`` run in caller threads; ``_on_response`` in the
I/O loop (or the hub, when green); resends, held casts and the periodic
checks in the keeper's own background thread (``run_pending``), because
choosing a server may wait on the matchmaker, which the loop must never do.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from oslo_messaging import exceptions

from zmqdriver import metrics, protocol
from zmqdriver.addressing import Endpoint, describe_target
from zmqdriver.exceptions import BackendError
from zmqdriver.rpc.chooser import NoServer, ServerChooser
from zmqdriver.rpc.outbox import PEER_LOST, Outbox, Response
from zmqdriver.rpc.request import Request
from zmqdriver.throttle import Throttle

LOG = logging.getLogger(__name__)

TICK = 0.1  # seconds between the periodic checks of the background thread
RETRY_HELD_EVERY = 0.5
FORGET_AFTER = 600.0  # a cast without DONE for this long: its DONE was lost, stop tracking
_ROOM_WAIT = 0.5  # a caller waiting for room re-checks this often
# A fanout copy its server REJECTed goes to that server again after this long, while the
# server is registered: a server fences itself for FENCE_AFTER_PAUSE (1 s) after a pause.
FANOUT_AGAIN_AFTER = 1.0
# After we drop a silent server's connection, its fanout copies lost with it go to it again
# (over a new connection) if their loss is reported within this long.
SILENCED_FOR = 10.0


@dataclass(frozen=True)
class CastLimits:
    hold_time: float  # zmq_cast_hold_time
    hold_max: int  # zmq_cast_hold_max
    track_max: int  # zmq_cast_track_max
    window: int  # zmq_cast_window
    ack_timeout: float  # rpc_ack_timeout_base


@dataclass(eq=False)
class Cast(Request):
    """One cast on its way, from ``cast()`` until every copy is DONE."""

    held_since: float | None = None  # when it first waited for a server

    @property
    def fanout(self) -> bool:
        return bool(self.target.fanout)

    def describe(self) -> str:
        return f"cast {protocol.msg_id_str(self.msg_id)} to {describe_target(self.target)}"


@dataclass
class _Copy:
    """One cast on its way to one server (a fanout cast has one copy per server)."""

    cast: Cast
    server: Endpoint
    ack_due: float  # math.inf once the server acknowledged it (or its loss is known)
    since: float


class CastKeeper:
    def __init__(
        self,
        *,
        outbox: Outbox,
        chooser: ServerChooser,
        limits: CastLimits,
        start_background: Callable[[Callable[[], None]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``start_background(work)`` runs ``work`` in a thread of its own (once)."""
        self._outbox = outbox
        self._chooser = chooser
        self._limits = limits
        self._start_background = start_background
        self._clock = clock
        # Copies on their way, by (message id, server); guarded by _room.
        self._copies: dict[tuple[bytes, Endpoint], _Copy] = {}
        self._per_server: collections.Counter[Endpoint] = collections.Counter()
        self._per_msg: collections.Counter[bytes] = collections.Counter()  # on their way, queued
        # Fanout copies waiting for room in their server's window, in order; guarded by _room.
        self._queued: dict[Endpoint, collections.deque[Cast]] = {}
        self._queued_count = 0
        self._room = threading.Condition()
        self._wake_due = False  # _wake_now is on its way; guarded by _room
        self._held: collections.OrderedDict[bytes, Cast] = collections.OrderedDict()
        self._held_lock = threading.Lock()
        self._resends: queue.Queue[Cast | None] = queue.Queue()
        # Fanout copies REJECTed by their server, (when to send again, copy), oldest first.
        self._again: collections.deque[tuple[float, _Copy]] = collections.deque()
        self._again_lock = threading.Lock()
        # Servers whose connection we dropped for silence, until when their lost fanout
        # copies go to them again: written by the background thread, read by the loop.
        self._silenced: dict[Endpoint, float] = {}
        self._started = False
        self._start_lock = threading.Lock()
        self._stopped = False
        self._finished = threading.Event()  # the background work has returned
        self._next_ack_check = 0.0
        self._next_held_retry = 0.0
        self._full_logged = Throttle(every=10.0)
        # Failures of a server said once per outage (until it runs a cast again).
        self._outages = Throttle(every=math.inf)
        self._troubled: set[Endpoint] = set()  # servers with a failure said; I/O loop only

    # -- caller threads ----------------------------------------------------------

    def cast(self, cast: Cast) -> None:
        """Send ``cast`` to a server of its target, or hold it until one registers.

        Waits while the chosen server's window is full. Raises
        MessageDeliveryFailure when the cast can be neither sent nor held,
        and BackendError when the matchmaker refuses us.
        """
        if self._holding(cast.key):
            self._hold_or_raise(cast)  # behind earlier casts to the target: keep order
            return
        try:
            server = self._choose(cast)
        except NoServer:
            self._hold_or_raise(cast)
            return
        with self._room:
            self._wait_for_room(server)
            self._claim(cast, [server])
        self._transmit(cast, [server])

    def _choose(self, cast: Cast) -> Endpoint:
        """A server for ``cast`` now; NoServer when the only ones left are unreachable.

        A cast sent to an unreachable server would only be refused and come back;
        held, it goes as soon as that server is reached again or another registers.
        """
        return self._chooser.choose(cast.key, cast.tried, self._clock(), reachable_only=True)

    def fanout(self, cast: Cast) -> None:
        """Send a copy of ``cast`` to every server of its target registered now.

        A server whose window is full gets its copy once room frees there, after the
        copies queued for it before (``_queued``): one slow server holds up neither the
        other servers nor the caller, which waits only while ``zmq_cast_track_max``
        copies are on their way or queued. A server we cannot reach gets none (``_skip``).
        """
        try:
            found = self._chooser.fanout_servers(cast.key)
        except NoServer as exc:
            # Fanout goes to the servers that exist now; none is a valid answer
            # (as a fanout exchange without queues), but not a silent one.
            LOG.warning(
                "Fanout %s reached no server: none is registered%s", cast.describe(), exc.detail
            )
            return
        self._skip(cast, found.unreachable)
        servers = found.reachable
        if not servers:
            return
        with self._room:
            self._wait_for_room(None)
            ready = [server for server in servers if self._window_open(server)]
            for server in servers:
                if server not in ready:
                    self._queued.setdefault(server, collections.deque()).append(cast)
            self._queued_count += len(servers) - len(ready)
            self._claim(cast, ready, queued=len(servers) - len(ready))
        self._transmit(cast, ready)

    def _skip(self, cast: Cast, servers: list[Endpoint]) -> None:
        """Send no copy to ``servers``: our connections to them are down.

        A copy would be refused (nothing listens) or wait for a host that is gone,
        and a fanout copy is never sent elsewhere, so it would be lost all the same;
        skipping it spares the sending and the log until the dead server's record
        expires. Said once per server until it runs a cast again.
        """
        if servers:
            metrics.incr("fanout_skipped", len(servers))
        for server in servers:
            if self._first_in_outage(server, "unreachable") == logging.WARNING:
                LOG.warning(
                    "Fanout skips %s from %s on: its connection is down (refused, or lost and "
                    "not re-established); it gets no copies until it is reached again",
                    server,
                    cast.describe(),
                )

    def close(self) -> None:
        self._stopped = True
        self._resends.put(None)
        with self._room:
            self._room.notify_all()
        if self._started:
            self._finished.wait(10)
        if self._held:
            LOG.error(
                "Transport closed with %d casts still waiting for a server; they are lost",
                len(self._held),
            )
        if self._queued_count:
            LOG.error(
                "Transport closed with %d fanout copies still waiting for room in their "
                "server's window (zmq_cast_window); they are lost",
                self._queued_count,
            )

    def _wait_for_room(self, server: Endpoint | None) -> None:
        """Block while ``server``'s window (or the process-wide limit) is full (under _room).

        With ``server`` None, only while the process-wide limit is reached. The
        caller claims the room in the same hold of ``_room`` (``_claim``).
        """
        if self._has_room(server):
            return  # the usual case: no clock to read
        since = warned = self._clock()
        while not self._stopped and not self._has_room(server):
            self._room.wait(_ROOM_WAIT)
            if self._clock() - warned > 2 * self._limits.ack_timeout:
                warned = self._clock()
                LOG.warning(
                    "cast() has waited %.0fs for room: %d casts on their way to %s "
                    "(zmq_cast_window=%d), %d in all (zmq_cast_track_max=%d)",
                    warned - since,
                    self._per_server[server] if server else 0,
                    server or "any server",
                    self._limits.window,
                    len(self._copies),
                    self._limits.track_max,
                )

    def _has_room(self, server: Endpoint | None) -> bool:
        if len(self._copies) + self._queued_count >= self._limits.track_max:
            self._log_full("in flight", self._limits.track_max, "zmq_cast_track_max", "waiting")
            return False
        return server is None or self._window_open(server)

    def _wake_waiting(self) -> None:
        """Wake the callers waiting for room once the loop is done reading (under _room).

        A DONE batch frees room at one id after another; a caller woken at the
        first preempted the loop only to wait for the GIL it held, as an executor
        thread woken mid-batch did (doc/benchmarks.md, seventh round). Once per
        turn, waking them at every batch keeps the server fed better than waiting
        for half the window to be free (casts/s +14 %, tenth round).
        """
        if not self._wake_due:
            self._wake_due = True
            self._outbox.after_reading(self._wake_now)

    def _wake_now(self) -> None:
        with self._room:
            self._wake_due = False
            self._room.notify_all()

    def _window_open(self, server: Endpoint) -> bool:
        """Room in ``server``'s window, and no fanout copy queued for it first (under _room)."""
        return self._per_server[server] < self._limits.window and not self._queued.get(server)

    def _hold_or_raise(self, cast: Cast) -> None:
        if not self._hold(cast):
            raise self._hold_full_error(cast)

    # -- sending and holding (any thread) ----------------------------------------------

    def _send(
        self, cast: Cast, servers: list[Endpoint], queued: int = 0, since: float | None = None
    ) -> None:
        """Send ``cast`` to ``servers`` and watch each copy until its DONE (never waits)."""
        with self._room:
            self._claim(cast, servers, queued, since)
        self._transmit(cast, servers)

    def _claim(
        self, cast: Cast, servers: list[Endpoint], queued: int = 0, since: float | None = None
    ) -> None:
        """Watch a copy of ``cast`` on its way to each of ``servers`` (under _room).

        ``queued``: fanout copies of ``cast`` left in ``_queued`` (sent by ``_finish``);
        ``since``: when the copies were first sent, if they were before. The cast's
        responses are expected from here on: once the lock is let go, the loop may send
        a queued copy and read its DONE before this thread sends the others.
        """
        now = self._clock()
        due = now + self._limits.ack_timeout
        if self._per_msg[cast.msg_id] == 0:
            self._outbox.expect(cast.msg_id, self._on_response)
        self._per_msg[cast.msg_id] += queued
        for server in servers:
            self._watch(cast, server, due, now if since is None else since)

    def _transmit(self, cast: Cast, servers: list[Endpoint]) -> None:
        """Send the copies ``_claim`` watches."""
        cast.attempts += 1
        for server in servers:
            self._outbox.send_here(server, cast.msg_id, cast.frames)
        self._ensure_background()

    def _watch(self, cast: Cast, server: Endpoint, due: float, now: float) -> None:
        """Count one copy on its way to ``server`` (under _room)."""
        self._copies[(cast.msg_id, server)] = _Copy(cast, server, due, now)
        self._per_server[server] += 1
        self._per_msg[cast.msg_id] += 1

    def _next_queued(self, server: Endpoint) -> Cast | None:
        """The next fanout copy queued for ``server``, watched as on its way now, if its
        window has room (under _room); the caller sends it."""
        waiting = self._queued.get(server)
        if not waiting or self._per_server[server] >= self._limits.window:
            return None
        cast = waiting.popleft()
        if not waiting:
            del self._queued[server]
        self._queued_count -= 1
        self._per_msg[cast.msg_id] -= 1  # counted as queued, now as on its way
        now = self._clock()
        self._watch(cast, server, now + self._limits.ack_timeout, now)
        return cast

    def _hold(self, cast: Cast) -> bool:
        """Keep ``cast`` until a server exists; False when the hold is full.

        A cast held already (``_retry_held`` is trying it) keeps its place.
        """
        with self._held_lock:
            if cast.msg_id in self._held:
                return True
            if len(self._held) >= self._limits.hold_max:
                self._log_full("held", self._limits.hold_max, "zmq_cast_hold_max", "refusing more")
                return False
            if cast.held_since is None:
                cast.held_since = self._clock()
                metrics.incr("casts_held")
            self._held[cast.msg_id] = cast
        LOG.debug("No server for %s yet: held", cast.describe())
        self._ensure_background()
        return True

    def _holding(self, key: str) -> bool:
        """Casts to ``key`` are waiting: a new one must queue behind them (order)."""
        if not self._held:
            return False
        with self._held_lock:
            return any(cast.key == key for cast in self._held.values())

    def _unhold(self, cast: Cast) -> None:
        with self._held_lock:
            self._held.pop(cast.msg_id, None)

    @staticmethod
    def _hold_full_error(cast: Cast) -> exceptions.MessageDeliveryFailure:
        return exceptions.MessageDeliveryFailure(
            f"Cast to {describe_target(cast.target)} not delivered: no server is available "
            "and zmq_cast_hold_max casts are already waiting for one"
        )

    def _log_full(self, what: str, limit: int, option: str, consequence: str) -> None:
        if self._full_logged.admit(option) is not None:
            LOG.warning("%d casts already %s (%s); %s", limit, what, option, consequence)

    # -- responses (I/O loop or hub) ---------------------------------------------

    def _on_response(self, response: Response) -> None:
        kind = response.kind
        if kind == protocol.Kind.ACK:
            copy = self._copies.get((response.msg_id, response.endpoint))
            if copy is not None:
                copy.ack_due = math.inf
        elif kind == protocol.Kind.DONE:
            self._finish(response.msg_id, response.endpoint)
            if self._troubled:
                self._recovered(response.endpoint)
        elif kind in (PEER_LOST, protocol.Kind.REJECT):
            copy = self._finish(response.msg_id, response.endpoint)
            if copy is None:
                return
            if response.refused:
                self._refused(copy, response.reason)
            else:
                rejected = kind == protocol.Kind.REJECT
                again = rejected or self._silenced.get(copy.server, -math.inf) > self._clock()
                self._redirect(copy, "is stopping" if rejected else "was lost", again)

    def _finish(self, msg_id: bytes, server: Endpoint) -> _Copy | None:
        """Stop watching one copy, and send the next fanout copy queued for its server
        in its place; returns it, or None if it was not watched."""
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
            queued = self._next_queued(server)
            self._wake_waiting()
        if last:
            self._outbox.forget(msg_id)
        if queued is not None:
            self._outbox.send_here(server, queued.msg_id, queued.frames)
        return copy

    def _redirect(self, copy: _Copy, why: str, again: bool = False) -> None:
        """Send a cast its server did not run elsewhere; with ``again`` (the server refused
        it, or we dropped its connection for silence) a fanout copy goes to that server
        again (``_fanout_again``)."""
        # A lost server takes a whole window of casts with it, and resends may
        # meet it again: one WARNING per server per outage, the rest at DEBUG.
        level = self._first_in_outage(copy.server, why)
        if copy.cast.fanout:
            # A fanout copy belongs to that server only: nobody else may run it.
            LOG.log(
                level,
                "Server %s of fanout %s %s before running it",
                copy.server,
                copy.cast.describe(),
                why,
            )
            if again:
                with self._again_lock:
                    self._again.append((self._clock() + FANOUT_AGAIN_AFTER, copy))
            return
        LOG.log(
            level,
            "Server %s of %s %s before running it; sending it elsewhere",
            copy.server,
            copy.cast.describe(),
            why,
        )
        copy.cast.tried.add(copy.server)
        self._resends.put(copy.cast)

    def _refused(self, copy: _Copy, reason: str | None) -> None:
        """``copy.server`` refused this client's CURVE key (policy: doc/security.md).

        Only an operator can fix it, and may do so at run time (allowed keys
        are re-read within seconds), so a cast is held and retried like one
        without a server, up to zmq_cast_hold_time, and goes through once the
        key is allowed; a fanout copy, which belongs to that server only, is
        dropped. Said once per server until it runs a cast again.
        """
        if self._first_in_outage(copy.server, "refused") == logging.WARNING:
            LOG.error(
                "Server %s refused this client's CURVE key, so it runs none of our casts: %s. "
                "Casts are held and retried for up to zmq_cast_hold_time=%ss; fanout copies "
                "to it are dropped",
                copy.server,
                reason,
                self._limits.hold_time,
            )
        if copy.cast.fanout:
            LOG.debug("Fanout %s to %s dropped: key refused", copy.cast.describe(), copy.server)
            return
        copy.cast.tried.add(copy.server)
        self._resends.put(copy.cast)

    def _first_in_outage(self, server: Endpoint, what: str) -> int:
        """WARNING the first time ``what`` happens to ``server`` since it last ran a cast."""
        self._troubled.add(server)
        return logging.WARNING if self._outages.admit((server, what)) is not None else logging.DEBUG

    def _recovered(self, server: Endpoint) -> None:
        """``server`` ran a cast: its next failure is a new outage, worth a line again."""
        if server in self._troubled:
            self._troubled.discard(server)
            for what in ("was lost", "is stopping", "refused", "slow", "unreachable"):
                self._outages.forget((server, what))

    # -- the background thread -----------------------------------------------------------

    def _ensure_background(self) -> None:
        if self._started:
            return
        with self._start_lock:
            if not self._started:
                self._started = True
                self._start_background(self._serve)

    def _serve(self) -> None:
        try:
            while not self._stopped:
                try:
                    cast = self._resends.get(timeout=TICK)
                except queue.Empty:
                    cast = None
                if self._stopped:
                    return
                # The keeper must outlive any one cast's failure.
                try:
                    if cast is not None:
                        self._resend(cast)
                    self.run_pending()
                except Exception:
                    LOG.exception("zmqdriver: the cast keeper failed a round; going on")
        finally:
            self._finished.set()

    def run_pending(self) -> None:
        """Resend what was lost, check acknowledgements, retry held casts (background)."""
        while True:
            try:
                cast = self._resends.get_nowait()
            except queue.Empty:
                break
            if cast is not None:
                self._resend(cast)
        now = self._clock()
        if now >= self._next_ack_check:
            self._next_ack_check = now + TICK
            self._drop_silent_servers(now)
        if now >= self._next_held_retry:
            self._next_held_retry = now + RETRY_HELD_EVERY
            self._retry_held(now)
            self._forget_stale(now)
        self._fanout_again(now)

    def _fanout_again(self, now: float) -> None:
        """Send refused fanout copies to their server again, if it is still registered.

        A server REJECTs what it cannot take now: it is stopping (it unregistered first,
        so the copy is dropped here, as before) or it fences itself after a pause of its
        process (still registered: it gets the copy once the fence is over). Its memory
        of message ids makes it run a copy once however often it arrives. A copy is
        given up after zmq_cast_hold_time, or when the server became unreachable (killed
        meanwhile: as ``fanout`` skips it).
        """
        due = []
        with self._again_lock:
            while self._again and self._again[0][0] <= now:
                due.append(self._again.popleft()[1])
        registered: dict[str, list[Endpoint]] = {}
        for copy in due:
            key = copy.cast.key
            try:
                if key not in registered:
                    registered[key] = self._chooser.registered(key)
            except BackendError as exc:
                registered[key] = [copy.server]  # an outage: the server's say counts
                LOG.debug("Lookup of %s failed (%s); trying its servers again", key, exc)
            if copy.server not in registered[key]:
                LOG.info(
                    "Fanout %s not sent to %s again: it is no longer registered",
                    copy.cast.describe(),
                    copy.server,
                )
            elif self._chooser.unreachable(copy.server):
                LOG.info(
                    "Fanout %s not sent to %s again: its connection is down",
                    copy.cast.describe(),
                    copy.server,
                )
            elif now - copy.since > self._limits.hold_time:
                LOG.error(
                    "Fanout %s dropped: %s refused it for zmq_cast_hold_time=%ss",
                    copy.cast.describe(),
                    copy.server,
                    self._limits.hold_time,
                )
            else:
                metrics.incr("resends")
                self._send(copy.cast, [copy.server], since=copy.since)

    def _resend(self, cast: Cast) -> bool:
        """Send ``cast`` to another server, or hold it; never waits for room.

        Returns whether it is held (a held cast leaves the hold only as it is sent).
        """
        if cast.out_of_retries():
            LOG.error(
                "%s dropped: no server took it in %d attempts (retry=%s)",
                cast.describe(),
                cast.attempts,
                cast.retry,
            )
            self._unhold(cast)
            return False
        try:
            server = self._choose(cast)
        except (NoServer, BackendError) as exc:
            LOG.debug("%s held: %s", cast.describe(), exc)
            if self._hold(cast):
                return True
            LOG.error("%s", self._hold_full_error(cast))
            return False
        metrics.incr("resends")
        self._send(cast, [server])
        # After the send, so no new cast to its target overtakes it. A loss of that
        # connection is resent by this same thread, after this.
        self._unhold(cast)
        return False

    def _drop_silent_servers(self, now: float) -> None:
        """Servers that left a cast unacknowledged too long lose their connection.

        Dropping the connection discards what still sits in its socket (so it
        cannot reach that server after the casts went elsewhere) and reports
        every request on it as lost, which sends its casts elsewhere, and its
        fanout copies to it again over a new connection (``_silenced``). A late
        fanout copy alone drops nothing: it never goes elsewhere, so a drop
        would only lose it; heartbeats tell a dead server from a slow one.
        """
        with self._room:
            late = [copy for copy in self._copies.values() if copy.ack_due <= now]
            silent = {copy.server for copy in late if not copy.cast.fanout}
            for copy in late:
                copy.ack_due = math.inf  # said once; a drop's PEER_LOST is on the way
            for copy in self._copies.values():
                if copy.server in silent:
                    copy.ack_due = math.inf  # its PEER_LOST is on the way: do not drop twice
            for server in silent:
                self._silenced[server] = now + SILENCED_FOR
        for copy in late:
            if (
                copy.server not in silent
                and self._first_in_outage(copy.server, "slow") == logging.WARNING
            ):
                LOG.warning(
                    "%s has not acknowledged fanout %s within %ss; still waiting for it",
                    copy.server,
                    copy.cast.describe(),
                    self._limits.ack_timeout,
                )
        for server in silent:
            LOG.warning(
                "%s did not acknowledge a cast within %ss; sending its casts elsewhere",
                server,
                self._limits.ack_timeout,
            )
            self._outbox.drop(server)
        for server, until in list(self._silenced.items()):
            if until < now:
                del self._silenced[server]

    def _retry_held(self, now: float) -> None:
        """Send the held casts whose target has a server now, oldest first.

        They stay in the hold until each is sent, so casts that callers hold
        meanwhile neither take their places nor overtake them.
        """
        with self._held_lock:
            held = list(self._held.values())
        expired = 0
        blocked: set[str] = set()  # targets whose earlier cast is still held
        for cast in held:
            if now - cast.held_since > self._limits.hold_time:
                expired += 1
                self._unhold(cast)
            elif cast.key not in blocked and self._resend(cast):
                blocked.add(cast.key)  # the later ones stay held behind it
        if expired:
            LOG.error(
                "Dropped %d casts that no server took within zmq_cast_hold_time=%ss",
                expired,
                self._limits.hold_time,
            )

    def _forget_stale(self, now: float) -> None:
        with self._room:
            stale = [key for key, copy in self._copies.items() if now - copy.since > FORGET_AFTER]
        for msg_id, server in stale:
            self._finish(msg_id, server)


def start_thread(work: Callable[[], None]) -> None:
    """Run the keeper's background work in a daemon thread (green under eventlet)."""
    threading.Thread(target=work, name="zmqdriver-casts", daemon=True).start()
