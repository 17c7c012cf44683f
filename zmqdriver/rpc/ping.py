"""Liveness round trips: PING a server's ROUTER, its I/O loop answers PONG.

The loop answers without oslo's executor, so a server whose executor threads
are all busy still answers, and says how many requests wait for them (its
backlog). The PONG body also carries the process's counters
(:mod:`zmqdriver.metrics`): that is how ``zmqdriver-status exporter``
collects them without any service opening a port of its own.

A server older than PING drops it as an unknown kind: no answer within the
timeout reads as "not answering", the same as a dead or frozen server.
"""

from __future__ import annotations

import os
import queue
import socket
import time
from dataclasses import dataclass

from zmqdriver import metrics, protocol
from zmqdriver.addressing import Endpoint
from zmqdriver.rpc.outbox import PEER_LOST, Outbox, Response


@dataclass(frozen=True)
class ServerState:
    """What a server's loop knows about itself when a PING comes."""

    exchange: str
    topic: str
    accepting: bool  # False: not started yet, or stopping (it REJECTs requests)
    backlog: int  # requests handed to oslo's executor, not yet replied or DONE


def pong_body(state: ServerState) -> dict:
    """The body of a PONG: the server's state, its process and the process's counters."""
    return {
        "exchange": state.exchange,
        "topic": state.topic,
        "accepting": state.accepting,
        "backlog": state.backlog,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "counters": metrics.snapshot(),
    }


@dataclass(frozen=True)
class PingResult:
    """One server's answer, or why there was none (``error``)."""

    endpoint: Endpoint
    rtt: float | None = None  # seconds; None when it did not answer
    body: dict | None = None
    error: str = ""

    @property
    def alive(self) -> bool:
        return self.rtt is not None


def ping_servers(
    outbox: Outbox, endpoints: list[Endpoint], timeout: float
) -> dict[Endpoint, PingResult]:
    """PING every endpoint at once and wait up to ``timeout`` seconds for all answers."""
    # Responses are stamped as they arrive (the handler runs in the loop), so
    # one slow server does not inflate the round trips of the others.
    arrived: queue.Queue[tuple[float, Response]] = queue.Queue()
    sent: dict[bytes, tuple[Endpoint, float]] = {}
    for endpoint in dict.fromkeys(endpoints):
        msg_id = protocol.new_msg_id()
        outbox.expect(msg_id, lambda response: arrived.put((time.monotonic(), response)))
        sent[msg_id] = (endpoint, time.monotonic())
        outbox.send(endpoint, msg_id, _ping_frames(msg_id))
    results: dict[Endpoint, PingResult] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(results) < len(sent):
            try:
                when, response = arrived.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            endpoint, started = sent.get(response.msg_id, (None, 0.0))
            if endpoint is not None and endpoint not in results:
                results[endpoint] = _result(endpoint, response, when - started)
    finally:
        for msg_id in sent:
            outbox.forget(msg_id)
    return {
        endpoint: results.get(endpoint)
        or PingResult(endpoint, error=f"no answer within {timeout:g}s")
        for endpoint, _ in sent.values()
    }


def _ping_frames(msg_id: bytes) -> list[bytes]:
    # An empty map as body: requests are [header, body], so a PING has the
    # shape every server (older ones too) accepts before looking at the kind.
    codec = protocol.Codec.JSON
    return [
        protocol.encode_header(protocol.Kind.PING, msg_id, codec),
        protocol.encode_body({}, codec),
    ]


def _result(endpoint: Endpoint, response: Response, rtt: float) -> PingResult:
    if response.kind == PEER_LOST:
        return PingResult(endpoint, error=response.reason or "connection refused or lost")
    if response.kind != protocol.Kind.PONG:
        return PingResult(endpoint, error=f"answered {response.kind.name}, not PONG")
    try:
        body = protocol.decode_body(response.body or b"", response.codec)
    except protocol.ProtocolError as exc:
        return PingResult(endpoint, rtt, None, f"malformed answer: {exc}")
    return PingResult(endpoint, rtt, body)
