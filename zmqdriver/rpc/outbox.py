"""Outbox: the client's DEALER sockets, one per server endpoint, owned by the I/O loop.

Requests leave through the DEALER connected to the chosen server; that
server's ACK, HEARTBEAT, REPLY and REJECT frames come back on the same
socket and are routed to the waiting caller by message id.
"""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass

import zmq

from zmqdriver import protocol
from zmqdriver.addressing import Endpoint
from zmqdriver.eventloop import IoLoop

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Response:
    """One frame a server sent back about a request."""

    kind: protocol.Kind
    endpoint: Endpoint
    codec: protocol.Codec
    body: bytes | None


class Outbox:
    def __init__(self, loop: IoLoop, context: zmq.Context, linger_ms: int) -> None:
        self._loop = loop
        self._context = context
        self._linger_ms = linger_ms
        # Written by caller threads, read by the loop; dict operations are atomic.
        self._waiters: dict[bytes, queue.Queue] = {}
        self._dealers: dict[Endpoint, zmq.Socket] = {}  # loop thread only

    # -- caller threads ----------------------------------------------------------

    def expect(self, msg_id: bytes) -> queue.Queue:
        """Start collecting responses to ``msg_id``; call ``forget`` when done."""
        waiter: queue.Queue = queue.Queue()
        self._waiters[msg_id] = waiter
        return waiter

    def forget(self, msg_id: bytes) -> None:
        self._waiters.pop(msg_id, None)

    def send(self, endpoint: Endpoint, frames: list[bytes]) -> None:
        self._loop.submit(self._send, endpoint, frames)

    def drop(self, endpoint: Endpoint) -> None:
        """Close the connection to ``endpoint``, discarding what it has queued.

        Used when a server did not acknowledge in time: a request stuck in the
        socket must not reach the server later, after it was sent elsewhere.
        """
        self._loop.submit(self._drop, endpoint)

    # -- loop thread ---------------------------------------------------------------

    def _dealer(self, endpoint: Endpoint) -> zmq.Socket:
        dealer = self._dealers.get(endpoint)
        if dealer is None:
            dealer = self._context.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, self._linger_ms)
            dealer.connect(endpoint.uri)
            self._dealers[endpoint] = dealer
            self._loop.add_reader(dealer, lambda frames: self._on_response(endpoint, frames))
        return dealer

    def _send(self, endpoint: Endpoint, frames: list[bytes]) -> None:
        try:
            self._dealer(endpoint).send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:
            # Not sent: the caller gets no ACK and resends elsewhere.
            self._loop.runtime.log(
                logging.WARNING, "zmqdriver: send to %s failed: %s", endpoint, exc
            )

    def _drop(self, endpoint: Endpoint) -> None:
        dealer = self._dealers.pop(endpoint, None)
        if dealer is not None:
            self._loop.remove_reader(dealer)
            dealer.close(linger=0)

    def _on_response(self, endpoint: Endpoint, frames: list[bytes]) -> None:
        if len(frames) not in (1, 2):
            self._loop.runtime.log(
                logging.WARNING,
                "zmqdriver: dropped a %d-frame response from %s",
                len(frames),
                endpoint,
            )
            return
        try:
            header = protocol.decode_header(frames[0])
        except protocol.ProtocolError as exc:
            self._loop.runtime.log(
                logging.WARNING, "zmqdriver: dropped response from %s: %s", endpoint, exc
            )
            return
        waiter = self._waiters.get(header.msg_id)
        if waiter is None:
            return  # the caller gave up (timeout) or it is a duplicate ACK
        body = frames[1] if len(frames) == 2 else None
        self._loop.runtime.deliver(waiter.put, Response(header.kind, endpoint, header.codec, body))

    def close(self) -> None:
        """Close every DEALER; runs in the loop thread."""
        for endpoint in list(self._dealers):
            dealer = self._dealers.pop(endpoint)
            self._loop.remove_reader(dealer)
            dealer.close()
