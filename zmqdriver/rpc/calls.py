"""Calls, from ``call()`` to the reply: the ``Caller`` runs in the caller's thread.

A call goes through two states:

1. **Delivering**: sent to a server, waiting for its ACK. A server that does
   not acknowledge within ``rpc_ack_timeout_base``, whose connection is lost,
   or that REJECTs the call (it is stopping) is skipped, and the same message
   (same id, so a server can de-duplicate) goes to another server; ``retry``
   bounds those resends. The ACK itself wakes nobody: the caller looks at it
   when a reply or heartbeat comes, or when its ACK deadline passes.
2. **Accepted**: never sent elsewhere again, unless the server REJECTs it
   unrun (its process paused, and the call waited through the pause; see
   ``rpc/server.py``), which puts it back in state 1. It waits for the REPLY
   until the call's timeout; with ``call_monitor_timeout`` every HEARTBEAT
   extends a shorter monitor deadline; a lost connection fails it at once
   with ``ServerLost`` (it may or may not have run).

Each attempt goes on the calling thread's own connection to the chosen
server when it has or may open one (``rpc/lines.py``), else through the
outbox's shared connections: both answer the same way, so this module does
not care which.

A server that refuses this client's CURVE key ends the call at once with
``KeyRefused``: no other server or resend is tried, because the fix (allowing
the key) is an operator's, and waiting would only hide it.
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass, field

from oslo_messaging import exceptions
from oslo_messaging._drivers import common as driver_common

from zmqdriver import metrics, protocol
from zmqdriver.addressing import Endpoint, describe_target
from zmqdriver.eventloop import native_lock
from zmqdriver.exceptions import KeyRefused, ServerLost
from zmqdriver.rpc.chooser import NoServer, ServerChooser
from zmqdriver.rpc.lines import CallerLine, CallerLines
from zmqdriver.rpc.outbox import PEER_LOST, Outbox, Response, Waiter
from zmqdriver.rpc.request import Request
from zmqdriver.throttle import Throttle

LOG = logging.getLogger(__name__)

# A silent server is reported at most this often (senders retry it many times).
_SILENCE_LOG_EVERY = 30.0


@dataclass(eq=False)
class Call(Request):
    """One call on its way: a request with time limits."""

    timeout: float | None = None  # None: wait for ever, as with the other drivers
    monitor_timeout: float | None = None  # call_monitor_timeout
    started: float = field(default_factory=time.monotonic)
    sent_at: float = 0.0  # when it was last sent

    @property
    def deadline(self) -> float | None:
        return self.started + self.timeout if self.timeout else None

    def expired(self) -> bool:
        """The call's own timeout has passed."""
        deadline = self.deadline
        return deadline is not None and time.monotonic() >= deadline

    def ack_deadline(self, ack_timeout: float) -> float:
        """When to stop waiting for the ACK (and look at what came)."""
        limits = [time.monotonic() + ack_timeout]
        if self.deadline is not None:
            limits.append(self.deadline)
        if self.monitor_timeout:
            limits.append(self.sent_at + self.monitor_timeout)  # no heartbeat by then: fail fast
        return min(limits)

    def describe(self) -> str:
        return (
            f"call to {describe_target(self.target)} (message {protocol.msg_id_str(self.msg_id)})"
        )


class _RefusedAfterAck(Exception):
    """The server that acknowledged the call refused it before running it."""


class _Route:
    """Where a call's current attempt went: through the outbox, or on the
    calling thread's own line to the server (rpc/lines.py). Both have the
    outbox's interface; what waits for the answers comes from the same one."""

    def __init__(self) -> None:
        self.via: Outbox | CallerLine | None = None
        self.waiter: Waiter | CallerLine | None = None
        self.server: Endpoint | None = None

    def send(self, via: Outbox | CallerLine, server: Endpoint, call: Call) -> None:
        self.end(call.msg_id)
        self.via, self.server = via, server
        self.waiter = via.expect(call.msg_id)
        via.send(server, call.msg_id, call.frames)

    def drop(self, msg_id: bytes) -> None:
        """Close the connection the attempt went on (see ``Outbox.drop``)."""
        self.via.drop(self.server, msg_id)

    def end(self, msg_id: bytes) -> None:
        if self.via is not None:
            self.via.forget(msg_id)


class Caller:
    def __init__(
        self,
        *,
        outbox: Outbox,
        chooser: ServerChooser,
        ack_timeout: float,
        allowed_remote_exmods: list[str],
        lines: CallerLines | None = None,
    ) -> None:
        """``lines``: the calling threads' own connections, if calls may use them."""
        self._outbox = outbox
        self._lines = lines
        self._in_flight = 0  # calls of this process under way (read without the lock)
        self._in_flight_lock = native_lock()
        self._chooser = chooser
        self._ack_timeout = ack_timeout
        self._allowed_remote_exmods = allowed_remote_exmods
        self._silence_logged = Throttle(every=_SILENCE_LOG_EVERY)

    def call(self, call: Call):
        """The call's result; raises its remote exception, MessagingTimeout or ServerLost."""
        route = _Route()
        with self._in_flight_lock:
            self._in_flight += 1
        try:
            while True:
                server, early = self._deliver(call, route)
                try:
                    return self._await_reply(call, route.waiter, server, early)
                except _RefusedAfterAck:
                    # The server took it, then paused, and refused it unrun:
                    # deliver it again, elsewhere first.
                    LOG.debug("%s refused the %s after a pause", server, call.describe())
                    call.tried.add(server)
        except exceptions.MessagingTimeout:  # ServerLost too
            metrics.incr("timeouts")
            raise
        finally:
            route.end(call.msg_id)
            with self._in_flight_lock:
                self._in_flight -= 1

    # -- delivering --------------------------------------------------------------

    def _deliver(self, call: Call, route: _Route) -> tuple[Endpoint, Response | None]:
        """Send until a server acknowledges.

        Returns the server that took the call, and a response that came right
        behind its ACK (if any).
        """
        lookup_deadline = call.deadline if call.deadline is not None else float("inf")
        refusal = ""  # the last failed security handshake, for the final error
        while True:
            try:
                server = self._chooser.choose(call.key, call.tried, lookup_deadline)
            except NoServer as exc:
                raise exceptions.MessagingTimeout(
                    f"No server for {describe_target(call.target)} became available within "
                    f"{call.timeout}s{exc.detail}{refusal}"
                ) from None
            if call.attempts:
                metrics.incr("resends")
            route.send(self._via(server), server, call)
            call.sent_at = time.monotonic()
            call.attempts += 1
            acked_by, response = self._await_ack(
                route.waiter, server, call.ack_deadline(self._ack_timeout)
            )
            if acked_by is not None:
                return acked_by, response
            if response is not None and response.refused:
                # Every resend would be refused the same way until an operator
                # allows our key: say so now rather than at the timeout.
                route.drop(call.msg_id)
                raise KeyRefused(
                    f"The {call.describe()} was refused by {server} at the handshake: "
                    f"{response.reason}"
                )
            call.tried.add(server)
            self._chooser.failed(call.key)
            if response is None and call.expired():
                # The call's own deadline ended the wait, not the server's silence.
                route.drop(call.msg_id)
                raise exceptions.MessagingTimeout(
                    f"Timed out after {call.timeout}s: {server} had not acknowledged the "
                    f"{call.describe()}{refusal}"
                )
            refusal = self._leave(call, route, response) or refusal
            if call.out_of_retries():
                raise exceptions.MessageDeliveryFailure(
                    f"{describe_target(call.target)}: no server acknowledged after "
                    f"{call.attempts} attempts{refusal}"
                )

    def _via(self, server: Endpoint) -> Outbox | CallerLine:
        """The calling thread's own line to ``server`` if it has or may open one, while
        this is the process's only call under way.

        Alone, a call's two hand-overs to the I/O loop are most of its client-side
        time. With others under way the loop sends and reads several calls per
        turn on one connection, and that batching is worth more: with 8 threads
        calling at once, lines cost the client 370-420 µs of CPU per call against
        260 µs through the loop (doc/benchmarks.md).
        """
        if self._lines is None or self._in_flight > 1:
            return self._outbox
        return self._lines.line_for(server) or self._outbox

    def _leave(self, call: Call, route: _Route, response: Response | None) -> str:
        """Turn away from a server that did not take the call; returns its handshake refusal."""
        server = route.server
        if response is not None and response.kind == protocol.Kind.REJECT:
            return ""  # the server is stopping and said so: nothing is stuck anywhere
        # Silence or a lost connection: the copy may still sit in the socket and
        # must not reach the server after it was sent elsewhere.
        route.drop(call.msg_id)
        if response is not None and response.reason:
            # The outbox logged it (rate-limited); the caller's error will say it.
            return f"; the handshake with {server} failed: {response.reason}"
        if response is not None:
            LOG.debug("%s: connection lost before the ACK; trying another server", server)
        elif self._silence_logged.admit(server) is not None:
            LOG.warning(
                "%s did not acknowledge the %s within %ss; trying another server",
                server,
                call.describe(),
                self._ack_timeout,
            )
        return ""

    @staticmethod
    def _await_ack(
        waiter: Waiter | CallerLine, server: Endpoint, deadline: float
    ) -> tuple[Endpoint | None, Response | None]:
        """Wait for a server to take the call.

        Returns (server, response-after-the-ACK or None) once one did, or
        (None, the REJECT/PEER_LOST of ``server``, or None on silence).
        """
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return waiter.acked_by, None
            try:
                response = waiter.get(timeout=remaining)
            except queue.Empty:
                return waiter.acked_by, None
            if response.kind in (protocol.Kind.REJECT, PEER_LOST):
                if response.endpoint != server:
                    continue  # stale news about a server tried before
                if response.kind == PEER_LOST and waiter.acked_by == server:
                    return server, response  # accepted, then lost: ServerLost
                return None, response
            # A REPLY or HEARTBEAT implies its ACK (e.g. a late one from a slow server).
            return response.endpoint, response

    # -- accepted: awaiting the reply -----------------------------------------------

    def _await_reply(
        self, call: Call, waiter: Waiter | CallerLine, server: Endpoint, early: Response | None
    ):
        # The server owes a heartbeat within monitor_timeout of taking the call.
        monitor = call.monitor_timeout
        monitor_deadline = call.sent_at + monitor if monitor else None
        response = early
        while True:
            if response is None:
                limits = [d for d in (call.deadline, monitor_deadline) if d is not None]
                wait = max(0.0, min(limits) - time.monotonic()) if limits else None
                try:
                    response = waiter.get(timeout=wait)
                except queue.Empty:
                    raise self._timeout_error(call, monitor_deadline) from None
            if response.kind == protocol.Kind.REPLY:
                return self._result(response)
            if response.kind == protocol.Kind.HEARTBEAT and monitor:
                monitor_deadline = time.monotonic() + monitor
            if response.kind == protocol.Kind.REJECT and response.endpoint == server:
                raise _RefusedAfterAck()
            if response.kind == PEER_LOST and response.endpoint == server:
                raise ServerLost(
                    f"Connection to {server}, which accepted the {call.describe()}, was lost "
                    "before it replied; the call may or may not have run"
                )
            response = None

    @staticmethod
    def _timeout_error(call: Call, monitor_deadline: float | None) -> exceptions.MessagingTimeout:
        if monitor_deadline is not None and time.monotonic() >= monitor_deadline:
            return exceptions.MessagingTimeout(
                f"No heartbeat from the server for the {call.describe()} within "
                f"call_monitor_timeout={call.monitor_timeout}s"
            )
        return exceptions.MessagingTimeout(
            f"Timed out after {call.timeout}s waiting for a reply to the {call.describe()}"
        )

    def _result(self, response: Response):
        try:
            body = protocol.decode_body(response.body or b"", response.codec)
        except protocol.ProtocolError as exc:
            raise exceptions.MessagingException(
                f"Malformed reply from {response.endpoint}: {exc}"
            ) from None
        failure = body.get("failure")
        if failure is not None:
            raise driver_common.deserialize_remote_exception(failure, self._allowed_remote_exmods)
        return body.get("result")
