"""The client side of RPC: choose a server, hand the request over, await the outcome.

This runs in the caller's thread (or greenthread). A call waits for the
server's ACK; a server that does not acknowledge in time, or REJECTs because
it is stopping, is skipped and the same message (same id, so the server can
de-duplicate) goes to another server of the target. A cast is handed to the
CastKeeper, which does the same for it after ``cast()`` returned.
"""

from __future__ import annotations

import itertools
import logging
import queue
import time

from oslo_messaging import exceptions
from oslo_messaging._drivers import common as driver_common

from zmqdriver import addressing, protocol
from zmqdriver.addressing import Endpoint
from zmqdriver.discovery import Directory
from zmqdriver.matchmaker import MatchMakerError, MatchMakerUnavailable
from zmqdriver.rpc.keeper import CastKeeper
from zmqdriver.rpc.outbox import PEER_LOST, Outbox, Response, Waiter

LOG = logging.getLogger(__name__)

_POLL_MIN, _POLL_MAX = 0.05, 0.5


class NoServer(Exception):
    """No server of the target could be found in time (internal)."""


class ServerLost(exceptions.MessagingTimeout):
    """The server that accepted a call went away before replying.

    A MessagingTimeout, so callers that handle timeouts handle this too, but
    raised as soon as the connection is known lost instead of at the timeout.
    """


class RpcSender:
    def __init__(
        self,
        *,
        directory: Directory,
        outbox: Outbox,
        key_prefix: str,
        default_exchange: str | None,
        allowed_remote_exmods: list[str],
        codec: protocol.Codec,
        ack_timeout: float,
        keeper: CastKeeper,
    ) -> None:
        self._directory = directory
        self._outbox = outbox
        self._prefix = key_prefix
        self._default_exchange = default_exchange
        self._allowed_remote_exmods = allowed_remote_exmods
        self._codec = codec
        self._ack_timeout = ack_timeout
        self._keeper = keeper
        keeper.start(self._resend_cast)
        self._round_robin: dict[str, itertools.count] = {}

    def send(
        self,
        target,
        ctxt,
        message,
        wait_for_reply=None,
        timeout=None,
        call_monitor_timeout=None,
        retry=None,
        transport_options=None,
    ):
        exchange = addressing.target_exchange(target, self._default_exchange)
        kind = protocol.Kind.CALL if wait_for_reply else protocol.Kind.CAST
        msg_id = protocol.new_msg_id()
        body = {
            "exchange": exchange,
            "topic": target.topic,
            "server": target.server,
            "fanout": bool(target.fanout),
            "ctxt": protocol.context_dict(ctxt),
            "message": message,
        }
        if wait_for_reply and call_monitor_timeout:
            body["cm_timeout"] = call_monitor_timeout
        frames = [
            protocol.encode_header(kind, msg_id, self._codec),
            protocol.encode_body(body, self._codec),
        ]
        if target.fanout:
            key = addressing.rpc_key(self._prefix, exchange, target.topic)
            return self._fanout(key, frames, msg_id, target)
        key = addressing.rpc_key(self._prefix, exchange, target.topic, target.server)
        request = _Request(
            target, key, msg_id, frames, wait_for_reply, timeout, retry, call_monitor_timeout
        )
        mandatory = bool(getattr(transport_options, "at_least_once", False))
        if mandatory:
            self._check_deliverable(request, exchange, message)
        if not wait_for_reply:
            return self._cast(request)
        waiter = self._outbox.expect(msg_id)
        try:
            try:
                server, early = self._deliver(request, waiter)
            except NoServer as exc:
                raise exceptions.MessagingTimeout(
                    f"No server for {_describe(target)} became available within {timeout}s{exc}"
                ) from None
            return self._await_reply(request, waiter, server, early)
        finally:
            self._outbox.forget(msg_id)

    # -- casts -----------------------------------------------------------------------

    def _cast(self, request: _Request) -> None:
        """Hand the cast to a server, or hold it until one exists; the keeper sees it through."""
        if self._keeper.holding(request.key):
            self._hold(request, raise_when_full=True)  # behind earlier casts to the target
        else:
            self._send_cast(request, by_caller=True)

    def _resend_cast(self, request: _Request) -> None:
        """The keeper's way to send a cast again (held, unacknowledged or its server lost)."""
        if request.retry is not None and 0 <= request.retry < request.attempts:
            LOG.error(
                "Cast %s to %s dropped: no server took it in %d attempts (retry=%s)",
                protocol.msg_id_str(request.msg_id),
                _describe(request.target),
                request.attempts,
                request.retry,
            )
            return
        self._send_cast(request, by_caller=False)

    def _send_cast(self, request: _Request, by_caller: bool) -> None:
        """Send a cast to a server of its target (or hold it); returns without awaiting it.

        The caller of ``cast()`` waits while the chosen server's window is
        full and hears of a full hold or a refusing matchmaker; the keeper's
        resends (``by_caller`` False) never wait, so the keeper cannot stall
        behind a window only it can drain, and hold the cast again instead.
        """
        request.lookup_deadline = time.monotonic()  # look up once, never wait here
        try:
            endpoint = self._choose(request, request.tried, request.lookup_deadline)
        except NoServer:
            self._hold(request, raise_when_full=by_caller)
            return
        except MatchMakerError as exc:
            if by_caller:
                raise  # the caller learns at once why nothing can be sent
            LOG.debug("Cast %s held: %s", protocol.msg_id_str(request.msg_id), exc)
            self._hold(request, raise_when_full=False)
            return
        if by_caller:
            self._keeper.wait_for_room(endpoint)
        request.attempts += 1
        self._keeper.send(request, [endpoint])

    def _hold(self, request: _Request, raise_when_full: bool) -> None:
        if self._keeper.hold(request):
            LOG.debug("No server for %s yet: cast held", _describe(request.target))
            return
        error = exceptions.MessageDeliveryFailure(
            f"Cast to {_describe(request.target)} not delivered: no server is available and "
            "zmq_cast_hold_max casts are already waiting for one"
        )
        if raise_when_full:
            raise error
        LOG.error("%s", error)

    # -- finding servers ---------------------------------------------------------

    def _check_deliverable(self, request: _Request, exchange: str, message) -> None:
        try:
            endpoints = self._directory.endpoints(request.key, fresh=True)
        except MatchMakerError as exc:
            endpoints, error = [], exc
        else:
            error = None
        if not endpoints:
            reason = exceptions.MessageDeliveryFailure(
                f"No server registered for {_describe(request.target)}"
                + (f" (matchmaker: {error})" if error else "")
            )
            raise exceptions.MessageUndeliverable(reason, exchange, request.key, message)

    def _lookups(self, key: str, deadline: float):
        """Yield the endpoints of ``key`` until the caller is satisfied or ``deadline``.

        The first answer may come from the cache, later ones are fresh, with
        a growing pause between them; at the deadline NoServer is raised. A
        matchmaker that refuses us (not merely unreachable) raises at once.
        """
        fresh, poll, error = False, _POLL_MIN, None
        while True:
            try:
                yield self._directory.endpoints(key, fresh=fresh)
            except MatchMakerUnavailable as exc:
                error = exc  # an outage: keep waiting, it may end before the deadline
                yield []
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if not fresh:  # the cache may be behind: one fresh look first
                    fresh = True
                    continue
                raise NoServer(f" (matchmaker: {error})" if error else "")
            time.sleep(min(poll, remaining))
            fresh, poll = True, min(poll * 2, _POLL_MAX)

    def _choose(self, request: _Request, tried: set[Endpoint], deadline: float) -> Endpoint:
        """An endpoint of the target not yet tried; waits for one until ``deadline``."""
        for lookup, endpoints in enumerate(self._lookups(request.key, deadline)):
            candidates = [e for e in endpoints if e not in tried]
            # Servers that recently failed us are the last resort, not avoided
            # for ever: they may be back.
            healthy = [e for e in candidates if not self._outbox.is_suspect(e)]
            candidates = healthy or candidates
            if candidates:
                counter = self._round_robin.setdefault(request.key, itertools.count())
                return candidates[next(counter) % len(candidates)]
            if lookup and endpoints:
                # Every server was tried once: give them another chance.
                tried.clear()
        raise AssertionError("unreachable: _lookups ends by raising NoServer")

    # -- handing over ------------------------------------------------------------

    def _deliver(self, request: _Request, waiter: Waiter) -> tuple[Endpoint, Response | None]:
        """Send until a server acknowledges.

        Returns the server that took the request, and a response that came
        right behind its ACK (if any).
        """
        tried = request.tried
        attempts = 0
        refusal = ""  # the last failed security handshake, for the final error
        while True:
            try:
                endpoint = self._choose(request, tried, request.lookup_deadline)
            except NoServer as exc:
                raise NoServer(f"{exc}{refusal}") from None
            self._outbox.send(endpoint, request.msg_id, request.frames)
            request.sent_at = time.monotonic()
            attempts += 1
            deadline = request.ack_deadline(self._ack_timeout)
            acked_by, response = self._await_ack(waiter, endpoint, deadline)
            if acked_by is not None:
                return acked_by, response
            tried.add(endpoint)
            self._directory.invalidate(request.key)
            if response is None and request.expired():
                # The caller's own deadline ended the wait, not the server's silence.
                self._outbox.drop(endpoint, request.msg_id)
                raise exceptions.MessagingTimeout(
                    f"Timed out after {request.timeout}s: {endpoint} had not acknowledged the "
                    f"call to {_describe(request.target)} (message "
                    f"{protocol.msg_id_str(request.msg_id)}){refusal}"
                )
            if response is not None and response.reason:
                # The outbox logged it (rate-limited); the caller's error will say it.
                refusal = f"; the handshake with {endpoint} failed: {response.reason}"
                self._outbox.drop(endpoint, request.msg_id)
            elif response is None or response.kind == PEER_LOST:
                # Silence or a lost connection: the copy may still sit in the
                # socket and must not reach the server after we resend elsewhere.
                LOG.warning(
                    "%s did not acknowledge %s (%s); trying another server",
                    endpoint,
                    _describe(request.target),
                    "connection lost" if response else f"nothing within {self._ack_timeout}s",
                )
                self._outbox.drop(endpoint, request.msg_id)
            if request.retry is not None and request.retry >= 0 and attempts > request.retry:
                raise exceptions.MessageDeliveryFailure(
                    f"{_describe(request.target)}: no server acknowledged after {attempts} "
                    f"attempts{refusal}"
                )

    def _await_ack(
        self, waiter: Waiter, endpoint: Endpoint, deadline: float
    ) -> tuple[Endpoint | None, Response | None]:
        """Wait for a server to take the request.

        Returns (server, response-after-the-ACK or None) once one did, or
        (None, the REJECT/PEER_LOST of ``endpoint``, or None on silence).
        The ACK itself wakes nobody (``Waiter.acked_by``): a reply, a
        heartbeat or the deadline does.
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
                if response.endpoint != endpoint:
                    continue  # stale news about a server tried before
                if response.kind == PEER_LOST and waiter.acked_by == endpoint:
                    return endpoint, response  # accepted, then lost: ServerLost
                return None, response
            # A REPLY or HEARTBEAT implies its ACK (e.g. a late one from a slow server).
            return response.endpoint, response

    # -- awaiting the reply --------------------------------------------------------

    def _await_reply(
        self,
        request: _Request,
        waiter: Waiter,
        server: Endpoint,
        early: Response | None,
    ):
        deadline = request.deadline
        cm_timeout = request.cm_timeout
        # The server owes a heartbeat within cm_timeout of taking the call.
        cm_deadline = request.sent_at + cm_timeout if cm_timeout else None
        response = early
        while True:
            if response is None:
                now = time.monotonic()
                limits = [d for d in (deadline, cm_deadline) if d is not None]
                wait = max(0.0, min(limits) - now) if limits else None
                try:
                    response = waiter.get(timeout=wait)
                except queue.Empty:
                    raise self._timeout_error(request, cm_timeout, cm_deadline) from None
            if response.kind == protocol.Kind.REPLY:
                return self._result(response)
            if response.kind == protocol.Kind.HEARTBEAT and cm_timeout:
                cm_deadline = time.monotonic() + cm_timeout
            if response.kind == PEER_LOST and response.endpoint == server:
                raise ServerLost(
                    f"Connection to {server}, which accepted the call to "
                    f"{_describe(request.target)}, was lost before it replied; the call may "
                    f"or may not have run (message {protocol.msg_id_str(request.msg_id)})"
                )
            response = None

    def _timeout_error(self, request, cm_timeout, cm_deadline) -> exceptions.MessagingTimeout:
        msg_id = protocol.msg_id_str(request.msg_id)
        if cm_deadline is not None and time.monotonic() >= cm_deadline:
            return exceptions.MessagingTimeout(
                f"No heartbeat from the server for {_describe(request.target)} within "
                f"call_monitor_timeout={cm_timeout}s (message {msg_id})"
            )
        return exceptions.MessagingTimeout(
            f"Timed out after {request.timeout}s waiting for a reply from "
            f"{_describe(request.target)} (message {msg_id})"
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

    # -- fanout ----------------------------------------------------------------------

    def _fanout(self, key: str, frames: list[bytes], msg_id: bytes, target) -> None:
        """A copy to every server registered now; the keeper watches each until DONE."""
        try:
            endpoints = self._wait_for_endpoints(key, time.monotonic())
        except NoServer as exc:
            # Fanout goes to the servers that exist now; none is a valid answer
            # (as a fanout exchange without queues), but not a silent one.
            LOG.warning(
                "Fanout to %s reached no server: none is registered%s", _describe(target), exc
            )
            return
        for endpoint in endpoints:
            self._keeper.wait_for_room(endpoint)
        request = _Request(target, key, msg_id, frames, False, None, None, None)
        self._keeper.send(request, endpoints, fanout=True)

    def _wait_for_endpoints(self, key: str, deadline: float) -> list[Endpoint]:
        for endpoints in self._lookups(key, deadline):
            if endpoints:
                return endpoints
        raise AssertionError("unreachable: _lookups ends by raising NoServer")


class _Request:
    """One message on its way: its address, frames and time limits."""

    def __init__(self, target, key, msg_id, frames, is_call, timeout, retry, cm_timeout) -> None:
        self.target = target
        self.key = key
        self.msg_id = msg_id
        self.frames = frames
        self.is_call = bool(is_call)
        self.timeout = timeout
        self.retry = retry
        self.started = time.monotonic()
        self.sent_at = self.started  # the last time it was sent
        self.cm_timeout = cm_timeout if is_call else None  # call_monitor_timeout
        self.tried: set[Endpoint] = set()  # servers that failed this request (casts)
        self.attempts = 0
        # A call without a timeout waits for ever, as with the other drivers.
        self.deadline = self.started + timeout if (is_call and timeout) else None
        # How long to wait for a server to register: a call up to its
        # deadline; a cast never waits (it is held instead).
        self.lookup_deadline = self.deadline if self.deadline is not None else float("inf")
        if not self.is_call:
            self.lookup_deadline = self.started

    def expired(self) -> bool:
        """The call's own timeout has passed."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def ack_deadline(self, ack_timeout: float) -> float:
        """When to stop waiting for the ACK (and look at what came)."""
        limits = [time.monotonic() + ack_timeout, self.deadline]
        if self.cm_timeout:
            limits.append(self.sent_at + self.cm_timeout)  # no heartbeat by then: fail fast
        return min(limit for limit in limits if limit is not None)


def _describe(target) -> str:
    parts = [f"topic={target.topic!r}"]
    if target.exchange:
        parts.insert(0, f"exchange={target.exchange!r}")
    if target.server:
        parts.append(f"server={target.server!r}")
    if target.fanout:
        parts.append("fanout")
    return "target(" + ", ".join(parts) + ")"
