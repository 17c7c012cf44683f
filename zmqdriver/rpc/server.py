"""The server side of RPC: a ROUTER socket per listener, read by the I/O loop.

The loop drops duplicates by message id, hands new requests to oslo.messaging's
server through the listener callback, and acknowledges them so the sender stops
looking elsewhere (a call at once, a cast with its DONE or within CAST_ACK_DELAY).
Every send on the ROUTER goes through ``_send_locked``: the loop's own (ACK,
REJECT, DONE) and the executor threads' REPLYs, heartbeats and DONEs, which those
threads send themselves while the loop is idle and hand to it while it is busy
(see ``finish_cast`` for when a DONE waits for other casts).
"""

from __future__ import annotations

import collections
import logging
import os
import socket as pysocket
import time
from dataclasses import dataclass

import zmq
from oslo_messaging._drivers import base
from oslo_messaging._drivers import common as driver_common

import zmqdriver
from zmqdriver import addressing, metrics, protocol
from zmqdriver.addressing import Endpoint
from zmqdriver.discovery import Registrar
from zmqdriver.eventloop import IoLoop
from zmqdriver.eventloop.loop import LoopStopped, native_lock, send_frames
from zmqdriver.eventloop.pauses import PauseWatch
from zmqdriver.rpc import ping
from zmqdriver.rpc.dedup import RecentIds
from zmqdriver.security import KeyPair
from zmqdriver.throttle import Throttle

LOG = logging.getLogger(__name__)

_LOG_EVERY = 10.0  # seconds between two log lines about bad input from peers

# A cast's ACK waits this long for its DONE, which implies it: most casts run
# sooner, and then one message instead of two goes back. Far below any sane
# rpc_ack_timeout_base (minimum 0.05 s), so senders never resend because of it.
# Calls are acknowledged at once: an acknowledged call is never sent elsewhere.
CAST_ACK_DELAY = 0.01

# After a pause of this process (see eventloop/pauses.py) every request is
# refused for this long: what senders sent before or during the pause arrives
# from the sockets' buffers within milliseconds of waking, and its senders may
# have sent it elsewhere already. A refused request goes elsewhere, or comes
# back here after the fence.
FENCE_AFTER_PAUSE = 1.0


class StaleRequest(Exception):
    """A request that waited through a pause of this process: refused, not run."""


class _StaleRequestLog(logging.Filter):
    """oslo's server logs a message whose ``acknowledge()`` raised with a traceback
    at ERROR and skips it; for a request refused after a pause that skip is the
    intent, so it becomes one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        refused = record.exc_info[1] if record.exc_info else None
        if isinstance(refused, StaleRequest):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg, record.args = "zmqdriver: %s", (refused,)
            record.exc_info = record.exc_text = None
        return True


_OSLO_SERVER_LOG = logging.getLogger("oslo_messaging.rpc.server")
if not any(isinstance(f, _StaleRequestLog) for f in _OSLO_SERVER_LOG.filters):
    _OSLO_SERVER_LOG.addFilter(_StaleRequestLog())


@dataclass(frozen=True)
class BindSettings:
    """Where servers bind, what address they publish, what they accept."""

    bind_address: str
    host: str
    min_port: int
    max_port: int
    retries: int
    max_message_size: int = -1
    curve: KeyPair | None = None  # this server's key pair when CURVE is on


class Inbox:
    """A bound ROUTER socket and the request handling that runs in the loop thread."""

    def __init__(
        self,
        loop: IoLoop,
        context: zmq.Context,
        *,
        settings: BindSettings,
        topic: str,
        exchange: str,
        dedup_window: int,
        linger_ms: int,
    ) -> None:
        self._loop = loop
        self._topic = topic
        self._exchange = exchange
        self._accepting = False
        self._seen = RecentIds(dedup_window)  # requests taken
        self._done = RecentIds(dedup_window)  # casts that have run
        # Casts resent while running, to the connection the resend came on:
        # the sender now waits for the DONE there.
        self._resent = RecentIds(dedup_window)
        # Casts that ended and have not been settled (DONE sent) yet, the casts
        # handed to the executor that have not ended, and whether the loop has a
        # _settle_casts task queued: all guarded by _ended_lock (see finish_cast).
        self._ended: list[tuple[bytes, protocol.Header, bool]] = []
        self._casts_out = 0
        self._settle_queued = False
        self._ended_lock = native_lock()
        # Casts not acknowledged yet, oldest first: msg id -> (identity, header, due).
        self._unacked: collections.OrderedDict[bytes, tuple] = collections.OrderedDict()
        # _done, _resent and _unacked: the loop reads and writes them, and an executor
        # thread settling casts (finish_cast) writes them too.
        self._books_lock = native_lock()
        self._ack_timer = False
        # Casts read in this turn of the loop, for _hand_over_casts at its end.
        self._casts_read: list[ZmqIncomingMessage] = []
        # Requests handed to oslo's executor (counted in the loop thread), and
        # those answered since (REPLY or DONE, counted under _router_lock).
        self._handed = 0
        self._finished = 0
        self._complaints = Throttle(every=_LOG_EVERY)
        # Requests handed to the executor that have started and not been
        # answered yet (executor threads add, the loop removes).
        self._running: set[bytes] = set()
        # Requests that finished after a pause began and before the loop reported it
        # (see _note_finished), and the last pause reported (PauseWatch.generation).
        self._finished_in_pause: set[bytes] = set()
        self._reported_pause = loop.pauses.generation if loop.pauses is not None else 0
        self._pause_report_lock = native_lock()
        self._fenced_until = 0.0
        if loop.pauses is not None:
            loop.pauses.subscribe(self._on_pause)
        self.listener: RpcListener | None = None
        self._router = context.socket(zmq.ROUTER)
        # Executor threads send replies themselves (finish_call) under this lock:
        # a hand-over to the loop thread cost a call a wake-up of that thread.
        self._router_lock = native_lock()
        self._router.setsockopt(zmq.LINGER, linger_ms)
        self._router.setsockopt(zmq.MAXMSGSIZE, settings.max_message_size)
        if settings.curve is not None:
            # Before bind: the security mechanism is fixed per connection.
            self._router.setsockopt(zmq.CURVE_SERVER, 1)
            self._router.setsockopt(zmq.CURVE_SECRETKEY, settings.curve.secret.encode())
        self.endpoint = self._bind(settings)
        loop.add_reader(self._router, self._on_request, self._router_lock)

    def _bind(self, settings: BindSettings) -> Endpoint:
        address = settings.bind_address
        if ":" in address:  # IPv6 literal
            self._router.setsockopt(zmq.IPV6, 1)
            address = f"[{address}]"
        try:
            port = self._router.bind_to_random_port(
                f"tcp://{address}", settings.min_port, settings.max_port, settings.retries
            )
        except zmq.ZMQBindError as exc:
            self._router.close(linger=0)
            raise zmq.ZMQBindError(
                f"No free port in [{settings.min_port}, {settings.max_port}) on "
                f"{settings.bind_address} after {settings.retries} tries "
                "(rpc_zmq_min_port, rpc_zmq_max_port, rpc_zmq_bind_port_retries)"
            ) from exc
        # The public key goes into the matchmaker record with the address.
        key = settings.curve.public if settings.curve is not None else ""
        return Endpoint(settings.host, port, key)

    # -- executor threads ----------------------------------------------------------

    def answer(self, frames: list[bytes]) -> None:
        """Send a heartbeat to a client now, from this thread (see ``_send_now``)."""
        self._send_now(frames)

    def finish_cast(self, identity: bytes, header: protocol.Header, batched: bool) -> None:
        """A cast has run: its DONE goes out with those of the casts that ended with it.

        A busy loop settles them in one task. An idle loop is not woken: the
        thread that ends the last cast handed out sends every DONE owed itself
        (as a call's REPLY goes, see ``_send_now``). A cast that ends while
        others are out waits for that only while its ACK is pending, whose timer
        settles it (``_flush_acks``) within CAST_ACK_DELAY of its hand-over; a
        later one (a slow cast) is settled at once, so no DONE waits on a slow cast.
        Waking the loop at the first cast to end cost it the GIL's hand-over back
        from the executor threads, in the middle of a window (doc/benchmarks.md,
        eleventh round); a DONE per cast, sent at once, cost the client a read each.
        """
        self._note_finished(header.msg_id)
        with self._ended_lock:
            self._ended.append((identity, header, batched))
            self._casts_out -= 1
            if self._settle_queued:
                return
            here = self._loop.waiting
            # _unacked non-empty means the ACK timer is set (_acknowledge, _flush_acks).
            if here and self._casts_out > 0 and header.msg_id in self._unacked:
                return  # the last cast out, or the ACK timer, settles this one
            self._settle_queued = not here
        if not here:
            self._submit(self._settle_casts)
            return
        for frames in self._settle(self._take_ended()):
            self._send_now(frames)

    def finish_call(self, msg_id: bytes, frames: list[bytes]) -> None:
        """A call has run: send its REPLY now, from this thread (see ``_send_now``)."""
        self._note_finished(msg_id)
        self._send_now(frames, finished=msg_id)

    def _note_finished(self, msg_id: bytes) -> None:
        """Keep ``msg_id`` for the pause report if it ran through a pause not reported yet.

        Executor threads and the loop resume together after a pause; a request
        that ends before the loop notices would leave ``_running`` uncounted
        (test_freeze: a call told ServerLost that ran after the freeze, with
        "0 were running"). Called before the request leaves ``_running``, so the
        report finds it in one of the two sets. Pauses shorter than the watch's
        threshold may go unseen here: no sender gives up on a server that short.
        """
        pauses = self._loop.pauses
        if pauses is None or not self._pause_unreported(pauses):
            return  # the usual case, without a lock
        with self._pause_report_lock:
            if self._pause_unreported(pauses):
                self._finished_in_pause.add(msg_id)

    def _pause_unreported(self, pauses: PauseWatch) -> bool:
        # awake() moves the generation before the loop reports (_on_pause), and
        # stalled() is true from the threshold on until the loop runs again.
        return pauses.generation != self._reported_pause or pauses.stalled()

    def _send_now(self, frames: list[bytes], finished: bytes | None = None) -> None:
        """Send an answer from an executor thread, or hand it to a busy loop.

        ``finished``: the id of the call this answers. An idle loop would have
        to be woken to send it (a call's largest server-side step): this thread
        sends it instead, and tells the loop to look again only if a request
        waits (the send may have taken the socket's signal, see eventloop/loop.py).
        A busy loop sends it between two messages it reads anyway: several
        threads sending at once would only queue for the socket's lock (calls/s
        of 8 threads fell by 15 % when every answer was sent directly).
        """
        if not self._loop.waiting:
            self._submit(self.send, frames, finished)
            return
        with self._router_lock:
            self._send_locked(frames, finished)
            self._loop.recheck(self._router)

    def _send_locked(self, frames: list[bytes], finished: bytes | None) -> None:
        """Send ``frames`` on the ROUTER (under ``_router_lock``, from any thread),
        counting ``finished`` as answered."""
        if finished is not None:
            self._running.discard(finished)
            self._finished += 1
        if self._router.closed:
            if finished is not None:  # the listener was cleaned up: its client waits in vain
                LOG.error("zmqdriver: the server is closed; an answer to a client is lost")
            return
        try:
            send_frames(self._router, frames)
        except zmq.ZMQError as exc:
            self._complain("reply to a client failed: %s", exc)

    def start(self, message: ZmqIncomingMessage) -> None:
        """An executor is about to run ``message``; StaleRequest if it waited through a pause.

        Its sender may have sent it elsewhere meanwhile: it is refused
        (REJECT) and forgotten, so a later resend to this server runs it.
        """
        # Running before the check: a pause that lands right after the check must
        # find it running (the pause's report counts it), since it runs after the
        # pause (a cast run twice in test_freeze: checked, paused, then added).
        self._running.add(message.header.msg_id)
        pauses = self._loop.pauses
        if pauses is not None and pauses.paused_since(message.pause_generation):
            self._submit(self._refuse_stale, message.identity, message.header)
            raise StaleRequest(
                f"request {message.msg_id} waited through a pause of this process; refused"
            )

    def _submit(self, fn, *args) -> None:
        try:
            self._loop.submit(fn, *args)
        except LoopStopped:
            LOG.error("zmqdriver: the transport is closed; an answer to a client is lost")

    # -- loop thread ---------------------------------------------------------------

    def set_accepting(self, accepting: bool) -> None:
        self._hand_over_casts()  # taken before the change (a stop processes what it took)
        self._accepting = accepting

    def send(self, frames: list[bytes], finished: bytes | None = None) -> None:
        """Send ``frames`` on the ROUTER from the loop thread (see ``_send_locked``)."""
        with self._router_lock:
            self._send_locked(frames, finished)
        self._loop.sent_on(self._router)

    def _settle_casts(self) -> None:
        """Send the DONEs of the ended casts from the loop thread."""
        for frames in self._settle(self._take_ended()):
            self.send(frames)

    def _take_ended(self) -> list[tuple[bytes, protocol.Header, bool]]:
        with self._ended_lock:
            ended, self._ended = self._ended, []
            self._settle_queued = False
        return ended

    def _settle(self, ended: list[tuple[bytes, protocol.Header, bool]]) -> list[list[bytes]]:
        """Count ``ended`` as run (any thread); the DONE messages that say so."""
        owed = []
        with self._books_lock:
            for identity, header, batched in ended:
                msg_id = header.msg_id
                self._done.add(msg_id)
                self._unacked.pop(msg_id, None)  # DONE implies the ACK
                owed.append(protocol.OwedDone(identity, msg_id, header.codec, batched))
                resent_from = self._resent.pop(msg_id)
                if resent_from is not None and resent_from != identity:
                    owed.append(protocol.OwedDone(resent_from, msg_id, header.codec, batched))
        # Done before no longer running: _refuse, in the loop, must find a cast in one of
        # the two (neither, it refuses it, and a resend after the fence runs it again).
        with self._router_lock:
            self._running.difference_update(header.msg_id for _, header, _ in ended)
            self._finished += len(ended)
        return protocol.done_messages(owed)

    def close(self) -> None:
        with self._router_lock:
            if not self._router.closed:
                self._loop.remove_reader(self._router)
                self._router.close()

    def _complain(self, msg: str, *args) -> None:
        # Rate-limited: hostile or broken peers must not flood the log.
        suppressed = self._complaints.admit()
        if suppressed is not None:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            self._loop.runtime.log(
                logging.WARNING, "zmqdriver server %s: " + msg + more, self.endpoint, *args
            )

    def _respond(
        self,
        identity: bytes,
        kind: protocol.Kind,
        header: protocol.Header,
        body: dict | None = None,
    ) -> None:
        frames = [identity, protocol.encode_header(kind, header.msg_id, header.codec)]
        if body is not None:
            frames.append(protocol.encode_body(body, header.codec))
        self.send(frames)

    def _acknowledge(self, identity: bytes, header: protocol.Header) -> None:
        if header.kind == protocol.Kind.CALL:
            metrics.incr("requests_acked")
            self._respond(identity, protocol.Kind.ACK, header)
            return
        with self._books_lock:
            self._unacked[header.msg_id] = (identity, header, time.monotonic() + CAST_ACK_DELAY)
        if not self._ack_timer:
            self._ack_timer = True
            self._loop.call_later(CAST_ACK_DELAY, self._flush_acks)

    def _flush_acks(self) -> None:
        """Acknowledge the casts that have waited CAST_ACK_DELAY without running, after
        settling those that ran (their DONE is owed, see ``finish_cast``)."""
        self._ack_timer = False
        self._settle_casts()
        now = time.monotonic()
        with self._books_lock:
            due_now = []
            while self._unacked:
                msg_id = next(iter(self._unacked))
                identity, header, due = self._unacked[msg_id]
                if due > now:
                    self._ack_timer = True
                    self._loop.call_later(due - now, self._flush_acks)
                    break
                del self._unacked[msg_id]
                if msg_id not in self._done:  # DONE went first (acknowledged as it ended)
                    due_now.append((identity, header))
        for identity, header in due_now:
            metrics.incr("requests_acked")
            self._respond(identity, protocol.Kind.ACK, header)

    def _on_request(self, frames: list) -> None:
        if len(frames) != 3:
            self._complain("dropped a message of %d frames (expected 3)", len(frames))
            return
        identity, head, payload = frames
        try:
            header = protocol.decode_header(head)
        except protocol.ProtocolError as exc:
            self._complain("dropped a message: %s", exc)
            return
        if header.kind == protocol.Kind.PING:
            self._answer_ping(identity, header)
            return
        if header.kind not in protocol.REQUEST_KINDS:
            self._complain("dropped a %s frame sent to a server", header.kind.name)
            return
        if not self._accepting:
            metrics.incr("requests_rejected")
            self._respond(identity, protocol.Kind.REJECT, header)
            return
        if time.monotonic() < self._fenced_until:
            self._refuse(identity, header)
            return
        if header.msg_id in self._seen:
            metrics.incr("duplicates_dropped")
            self._answer_resend(identity, header)
            return
        metrics.incr("requests_received")
        self._seen.add(header.msg_id)
        try:
            request = self._decode_request(payload, header)
        except protocol.ProtocolError as exc:
            self._acknowledge(identity, header)
            self._complain("dropped a request: %s", exc)
            if header.kind == protocol.Kind.CALL:
                self._respond(identity, protocol.Kind.REPLY, header, {"failure": _failure_for(exc)})
            return
        generation = self._loop.pauses.generation if self._loop.pauses is not None else 0
        incoming = ZmqIncomingMessage(self, identity, header, request, generation)
        self._handed += 1
        if header.kind == protocol.Kind.CALL:
            self._hand_over_casts()  # those read before it go first, in order
            self._hand_over(incoming)  # at once: its caller waits
            return
        if not self._casts_read:
            self._loop.at_turn_end(self._hand_over_casts)
        self._casts_read.append(incoming)

    def _answer_resend(self, identity: bytes, header: protocol.Header) -> None:
        """A resend of a request we already took: not run again, but DONE repeated
        if it has run (the first may have gone to a connection the sender has since
        replaced), else acknowledged, and a cast's DONE owed to this connection too."""
        with self._books_lock:  # a cast may be settled in another thread meanwhile
            ran = header.msg_id in self._done
            if not ran and header.kind == protocol.Kind.CAST:
                self._resent.add(header.msg_id, identity)
        if ran:
            self._respond(identity, protocol.Kind.DONE, header)
        else:
            self._acknowledge(identity, header)

    def _hand_over_casts(self) -> None:
        """Hand the casts read in this turn to oslo's executor, once the loop is done reading.

        Each hand-over wakes an executor thread, which, woken in the middle of a
        batch, preempted the loop only to wait for the GIL the loop held: a cast
        cost the server's loop 1.2 involuntary context switches, and now 0.3
        (doc/benchmarks.md, seventh round).
        """
        if not self._casts_read:
            return  # the usual case for a call, and for a turn whose casts a call took
        casts, self._casts_read = self._casts_read, []
        with self._ended_lock:
            self._casts_out += len(casts)
        for incoming in casts:
            self._hand_over(incoming)

    def _hand_over(self, incoming: ZmqIncomingMessage) -> None:
        self._loop.runtime.deliver(self._dispatch, incoming)
        # After the hand-over: the executor thread's wake-up, the call's longest
        # server-side step, starts before the ACK's send rather than after it
        # (call timeline, doc/benchmarks.md). An answer an executor thread finishes
        # meanwhile goes through this busy loop, so it still follows the ACK.
        self._acknowledge(incoming.identity, incoming.header)

    def _on_pause(self, seconds: float) -> None:
        """This process did not run for ``seconds``: fence off what waited through it."""
        self._fenced_until = time.monotonic() + FENCE_AFTER_PAUSE
        metrics.incr("pauses")
        with self._pause_report_lock:
            running = len(self._running | self._finished_in_pause)
            self._finished_in_pause.clear()
            self._reported_pause = self._loop.pauses.generation
        self._loop.runtime.log(
            logging.WARNING,
            "zmqdriver server %s: this process did not run for %.1fs or more (frozen or starved); "
            "requests that waited through the pause are refused so their senders can resend "
            "them; %d were running and may also have been run elsewhere",
            self.endpoint,
            seconds,
            running,
        )

    def _refuse(self, identity: bytes, header: protocol.Header) -> None:
        """Refuse a request that may have gone elsewhere; a cast that ran says DONE.

        A cast running here now is acknowledged instead, its DONE going to this
        connection too: refused, it would come back after the fence and run twice
        (seen at 300 hosts, where starved processes fence again and again).
        """
        # Running before done: a cast settled in between is in _done by then (_settle).
        running = header.kind == protocol.Kind.CAST and header.msg_id in self._running
        if running or header.msg_id in self._done:
            self._answer_resend(identity, header)
            return
        with self._books_lock:
            self._unacked.pop(header.msg_id, None)
        self._seen.pop(header.msg_id)  # a resend after the fence must run
        metrics.incr("requests_rejected")
        self._respond(identity, protocol.Kind.REJECT, header)

    def _refuse_stale(self, identity: bytes, header: protocol.Header) -> None:
        """An executor refused a request that waited through a pause: not running after
        all, so a resend acknowledged meanwhile as running is refused too."""
        self._running.discard(header.msg_id)
        with self._books_lock:
            resent_from = self._resent.pop(header.msg_id)
        self._refuse(identity, header)
        if resent_from is not None and resent_from != identity:
            self._refuse(resent_from, header)
        if header.kind == protocol.Kind.CAST:
            self._cast_never_ends()
            self._settle_casts()  # it may have been the last out (see finish_cast)

    def _cast_never_ends(self) -> None:
        """A cast handed to the executor will not end (refused, or its listener gone)."""
        with self._ended_lock:
            self._casts_out -= 1

    def _answer_ping(self, identity: bytes, header: protocol.Header) -> None:
        """Answer a PING here in the loop, so it answers while every executor is busy."""
        state = ping.ServerState(
            exchange=self._exchange,
            topic=self._topic,
            accepting=self._accepting,
            backlog=self._handed - self._finished,
        )
        self._respond(identity, protocol.Kind.PONG, header, ping.pong_body(state))

    def _decode_request(self, payload: bytes, header: protocol.Header) -> dict:
        request = protocol.decode_body(payload, header.codec)
        if not isinstance(request.get("message"), dict):
            raise protocol.ProtocolError("request has no message map")
        if not isinstance(request.get("ctxt", {}), dict):
            raise protocol.ProtocolError("request context is not a map")
        if (request.get("exchange"), request.get("topic")) != (self._exchange, self._topic):
            raise protocol.ProtocolError(
                f"request for exchange={request.get('exchange')!r} topic={request.get('topic')!r} "
                f"reached the server of exchange={self._exchange!r} topic={self._topic!r}"
            )
        return request

    # -- application side ----------------------------------------------------------

    def _dispatch(self, incoming: ZmqIncomingMessage) -> None:
        listener = self.listener
        callback = listener.on_incoming_callback if listener else None
        if callback is None:
            LOG.error("zmqdriver: request %s arrived after its listener stopped", incoming.msg_id)
            if incoming.header.kind == protocol.Kind.CAST:
                self._cast_never_ends()
            return
        callback([incoming])


def _failure_for(exc: Exception) -> str:
    """A caught exception as oslo serializes remote failures."""
    return driver_common.serialize_remote_exception((type(exc), exc, exc.__traceback__))


class ZmqIncomingMessage(base.RpcIncomingMessage):
    def __init__(
        self,
        inbox: Inbox,
        identity: bytes,
        header: protocol.Header,
        request: dict,
        pause_generation: int = 0,
    ):
        super().__init__(
            request.get("ctxt") or {}, request["message"], protocol.msg_id_str(header.msg_id)
        )
        self._inbox = inbox
        self.identity = identity
        self.header = header
        self.pause_generation = pause_generation  # pauses seen when it arrived
        self._is_call = header.kind == protocol.Kind.CALL
        self._batched_done = bool(request.get(protocol.BATCHED_DONE))
        self.client_timeout = request.get("cm_timeout")

    def acknowledge(self) -> None:
        """oslo's server calls this before it runs the message: the last chance to refuse it.

        The I/O loop acknowledges the request as it hands it over. Raises StaleRequest
        (oslo then skips the message) if it waited through a pause of this
        process, since its sender may have sent it elsewhere.
        """
        self._inbox.start(self)

    def requeue(self) -> None:
        """RPC requests are not requeued (require_features(requeue=True) says so)."""

    def reply(self, reply=None, failure=None) -> None:
        if not self._is_call:
            # oslo's server "replies" to casts too, once the endpoint has run:
            # tell the sender it may forget the cast.
            self._inbox.finish_cast(self.identity, self.header, self._batched_done)
            return
        if failure is not None:
            body = {"failure": driver_common.serialize_remote_exception(failure)}
        else:
            body = {"result": reply}
        try:
            payload = protocol.encode_body(body, self.header.codec)
        except Exception as exc:
            LOG.error("zmqdriver: reply to %s cannot be encoded: %s", self.msg_id, exc)
            payload = protocol.encode_body({"failure": _failure_for(exc)}, self.header.codec)
        frames = [self.identity, self._header_bytes(protocol.Kind.REPLY), payload]
        self._inbox.finish_call(self.header.msg_id, frames)

    def heartbeat(self) -> None:
        if self._is_call:
            self._inbox.answer([self.identity, self._header_bytes(protocol.Kind.HEARTBEAT)])

    def _header_bytes(self, kind: protocol.Kind) -> bytes:
        return protocol.encode_header(kind, self.header.msg_id, self.header.codec)


class RpcListener(base.Listener):
    """What ``ZmqDriver.listen`` returns to oslo.messaging's RPC server."""

    def __init__(
        self,
        loop: IoLoop,
        inbox: Inbox,
        registrar: Registrar,
        keys: list[str],
        batch_size: int,
        batch_timeout,
    ) -> None:
        super().__init__(batch_size, batch_timeout)
        self._loop = loop
        self._inbox = inbox
        self._registrar = registrar
        self._keys = keys
        self._record = addressing.encode_record(inbox.endpoint, this_server())
        self._registered = False
        self._closed = False
        inbox.listener = self

    @property
    def endpoint(self) -> Endpoint:
        return self._inbox.endpoint

    def start(self, on_incoming_callback) -> None:
        super().start(on_incoming_callback)
        self._loop.call(self._inbox.set_accepting, True)
        try:
            self._registrar.add(self._keys, self._record)
        except Exception:
            self._loop.call(self._inbox.set_accepting, False)
            raise
        self._registered = True
        LOG.info("zmqdriver: published %s in the matchmaker under %s", self.endpoint, self._keys)

    def stop(self) -> None:
        # Unregister first so clients stop choosing us, then refuse new work
        # (senders go elsewhere); what was accepted is still processed.
        if self._registered:
            self._registrar.remove(self._keys, self._record)
            self._registered = False
            LOG.info("zmqdriver: unregistered %s from %s; stopping", self.endpoint, self._keys)
        if not self._closed:
            self._loop.call(self._inbox.set_accepting, False)
        super().stop()

    def cleanup(self) -> None:
        if self._closed:
            return
        self.stop()
        self._closed = True
        self._loop.call(self._inbox.close)


def default_host() -> str:
    return pysocket.gethostname()


def this_server() -> addressing.ServerInfo:
    """What a record says about the process publishing it (for zmqdriver-status)."""
    return addressing.ServerInfo(
        hostname=pysocket.gethostname(),
        pid=os.getpid(),
        started=round(time.time(), 3),
        version=zmqdriver.__version__,
    )
