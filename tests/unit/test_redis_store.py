"""Redelivery in the Redis notification store, on this session's private redis-server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from tests.support import make_conf, parse
from zmqdriver.backends.redis import RedisBackend
from zmqdriver.notify.redis_store import RedisNotificationStore
from zmqdriver.notify.store import Retention

REDELIVERY = 1.0  # seconds a delivered message stays with its listener


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisNotificationStore]:
    conf = make_conf()
    backend = RedisBackend.from_url(conf, parse(conf, redis_url))
    try:
        yield RedisNotificationStore(backend, Retention(10_000, 3600.0), REDELIVERY)
    finally:
        backend.close()


def read_all(store, stream: str, consumer: str, reads: int) -> list[str]:
    """Payloads of ``reads`` reads of one message each, as a poll with batch_size 1 asks."""
    got: list[str] = []
    for _ in range(reads):
        got += [m.payload for m in store.read([stream], "pool", consumer, 1, 0.05)]
    return got


def test_a_dead_listeners_backlog_is_redelivered_at_the_pace_of_reads(store):
    stream = f"redelivery-{uuid.uuid4().hex[:8]}"
    store.subscribe([stream], "pool", "dead")
    for n in range(40):
        store.append(stream, str(n))
    assert len(read_all(store, stream, "dead", 3)) == 40  # prefetched, never acknowledged
    time.sleep(REDELIVERY + 0.2)
    # Once claimed at one message a second: 40 s. Five reads take well under one.
    got = read_all(store, stream, "survivor", 5)
    assert sorted(got, key=int) == [str(n) for n in range(40)]


def test_due_messages_behind_ones_in_use_are_claimed(store):
    stream = f"redelivery-{uuid.uuid4().hex[:8]}"
    store.subscribe([stream], "pool", "dead")
    for n in range(205):
        store.append(stream, str(n))
    assert len(read_all(store, stream, "dead", 13)) == 205
    time.sleep(REDELIVERY + 0.2)
    # A live listener has just taken over the first 200 (it is handling them, they are not
    # due); the last 5 are still the dead listener's, behind them in the pending list.
    ids = [entry["message_id"] for entry in _pending(store, stream)[:200]]
    store._backend.execute("take", lambda c: c.xclaim(stream, "pool", "busy", 0, ids, justid=True))
    got = read_all(store, stream, "survivor", 5)
    assert sorted(got, key=int) == [str(n) for n in range(200, 205)]


def _pending(store, stream: str) -> list[dict]:
    return store._backend.execute(
        "list pending", lambda c: c.xpending_range(stream, "pool", "-", "+", 1000)
    )
