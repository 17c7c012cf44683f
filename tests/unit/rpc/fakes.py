"""In-memory stand-ins for what the RPC core talks to: the outbox and a matchmaker.

The RPC core (chooser, calls, casts) decides; the outbox does the I/O. These
fakes let a test run the core in-process, in milliseconds: every send is
recorded, and the test answers as a server would (ACK, REJECT, DONE, REPLY,
HEARTBEAT) or breaks a connection (PEER_LOST). Routing answers to waiters
uses the real ``Waiters`` and ``Suspects``.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

import oslo_messaging

from zmqdriver import addressing, protocol
from zmqdriver.addressing import Endpoint
from zmqdriver.discovery import Directory
from zmqdriver.matchmaker import MatchMaker
from zmqdriver.rpc.chooser import ServerChooser
from zmqdriver.rpc.outbox import Response, Suspects, Waiter, Waiters

PREFIX = "test"
A, B, C = (Endpoint("127.0.0.1", port) for port in (5001, 5002, 5003))
_FINAL = {protocol.Kind.REPLY, protocol.Kind.REJECT, protocol.Kind.DONE}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MemoryMatchMaker(MatchMaker):
    """A matchmaker in a dict; ``failure`` makes every lookup raise it."""

    def __init__(self) -> None:
        super().__init__(conf=None, url=None)
        self.records: dict[str, set[str]] = collections.defaultdict(set)
        self.failure: Exception | None = None
        self.lookups = 0

    def register(self, key: str, record: str, expire: float) -> None:
        self.records[key].add(record)

    def unregister(self, key: str, record: str) -> None:
        self.records[key].discard(record)

    def lookup(self, key: str) -> list[str]:
        self.lookups += 1
        if self.failure is not None:
            raise self.failure
        return sorted(self.records[key])

    def serve(self, key: str, *servers: Endpoint) -> None:
        for server in servers:
            self.register(key, addressing.encode_record(server), 0)

    def leave(self, key: str, *servers: Endpoint) -> None:
        for server in servers:
            self.unregister(key, addressing.encode_record(server))


class FakeOutbox:
    """The outbox's interface, in memory."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.waiters = Waiters(deliver=lambda fn, *args: fn(*args))
        self.suspects = Suspects(clock)
        self.sent: list[tuple[Endpoint, bytes]] = []
        self.dropped: list[Endpoint] = []
        self.inflight: dict[Endpoint, set[bytes]] = collections.defaultdict(set)
        # A scripted server: called after every send, may answer at once.
        self.on_send: Callable[[Endpoint, bytes], None] | None = None

    def expect(self, msg_id: bytes, handler=None) -> Waiter:
        return self.waiters.expect(msg_id, handler)

    def forget(self, msg_id: bytes) -> None:
        self.waiters.forget(msg_id)

    def after_reading(self, fn: Callable[[], None]) -> None:
        fn()  # answers come from the test's own thread: no loop to wait for

    def send(self, endpoint: Endpoint, msg_id: bytes, frames: list[bytes]) -> None:
        self.sent.append((endpoint, msg_id))
        self.inflight[endpoint].add(msg_id)
        if self.on_send is not None:
            self.on_send(endpoint, msg_id)

    def send_here(self, endpoint: Endpoint, msg_id: bytes, frames: list[bytes]) -> None:
        self.send(endpoint, msg_id, frames)  # which thread sends is the real outbox's concern

    def drop(self, endpoint: Endpoint, known: bytes | None = None) -> None:
        self.dropped.append(endpoint)
        self.suspects.mark(endpoint)
        self.suspects.unwatched(endpoint)
        self.waiters.lost(endpoint, self.inflight.pop(endpoint, set()) - {known})

    # -- what a test does as the servers -------------------------------------------------

    def answer(
        self, endpoint: Endpoint, msg_id: bytes, kind: protocol.Kind, body: dict | None = None
    ):
        if kind in _FINAL:
            self.inflight[endpoint].discard(msg_id)
        encoded = None if body is None else protocol.encode_body(body, protocol.Codec.JSON)
        self.waiters.route(Response(kind, msg_id, endpoint, body=encoded))

    def lose(self, endpoint: Endpoint, reason: str | None = None, refused: bool = False) -> None:
        """The connection to ``endpoint`` broke (what the socket monitor reports).

        ``refused``: the server refused this client's CURVE key at the handshake
        (it is alive: its new connections are accepted, then refused the same way).
        """
        self.suspects.lost(endpoint)
        if refused:
            self.suspects.reached(endpoint)
        self.waiters.lost(endpoint, self.inflight.pop(endpoint, set()), reason, refused)

    def kill(self, endpoint: Endpoint) -> None:
        """The server's process died: its connection is lost, and reconnecting is refused."""
        self.lose(endpoint)
        self.suspects.refused(endpoint)

    def reconnect(self, endpoint: Endpoint, handshake: bool = True) -> None:
        """A TCP connection to ``endpoint`` is established again; ``handshake``: and
        completed (False: a stopped process, whose kernel accepts it but nothing more)."""
        self.suspects.reached(endpoint)
        if handshake:
            self.suspects.clear(endpoint)

    def sent_to(self, endpoint: Endpoint) -> list[bytes]:
        return [msg_id for server, msg_id in self.sent if server == endpoint]


def target(topic: str = "t", server: str | None = None, fanout: bool = False):
    return oslo_messaging.Target(topic=topic, server=server, fanout=fanout)


def key_of(tgt) -> str:
    return addressing.rpc_key(PREFIX, "openstack", tgt.topic, tgt.server)


def chooser_for(matchmaker: MatchMaker, outbox: FakeOutbox, clock: Clock | None = None):
    directory = Directory(matchmaker, ttl=60.0)
    if clock is None:
        return ServerChooser(directory, outbox.suspects)
    return ServerChooser(directory, outbox.suspects, clock=clock, sleep=clock.advance)
