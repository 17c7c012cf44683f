"""The Redis notification store on this session's private redis-server: appends on held
connections, loose retention, redelivery."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from harness.redis_server import RedisServer
from harness.wait import eventually
from tests.support import make_conf, parse, throwaway_servers
from zmqdriver.backends.redis import HeldConnections, RedisBackend
from zmqdriver.exceptions import BackendError
from zmqdriver.notify.redis_store import DROPPED_SUFFIX, RedisNotificationStore
from zmqdriver.notify.store import NO_LISTENER_YET, Retention

REDELIVERY = 1.0  # seconds a delivered message stays with its listener
RETENTION = Retention(10_000, 3600.0)


@pytest.fixture
def new_store(redis_url: str) -> Iterator[Callable[..., RedisNotificationStore]]:
    """Stores on the session's Redis (``retention``, ``url`` may be given); closed at the end."""
    backends: list[RedisBackend] = []

    def make(retention: Retention = RETENTION, url: str = redis_url):
        conf = make_conf()
        backends.append(RedisBackend.from_url(conf, parse(conf, url)))
        return RedisNotificationStore(backends[-1], retention, REDELIVERY)

    yield make
    for backend in backends:
        backend.close()


@pytest.fixture
def store(new_store) -> RedisNotificationStore:
    return new_store()


@pytest.fixture
def extra_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    yield from throwaway_servers(RedisServer, tmp_path, "redis")


def entries(store, stream: str) -> list[str]:
    return store._backend.execute("list", lambda c: [f["p"] for _, f in c.xrange(stream)])


# --- appends on held connections ------------------------------------------------------


@pytest.mark.parametrize("max_count", [5, 10_000], ids=["script", "xadd"])
def test_appends_survive_a_redis_restart(new_store, redis_server, max_count):
    # A small limit runs the retention script on every append: after the restart
    # Redis has lost its script cache as well as the held connection.
    store = new_store(Retention(max_count, 3600.0))
    store.append("s", "before")
    redis_server.stop()
    redis_server.start()
    store.append("s", "after-1")
    store.append("s", "after-2")
    assert entries(store, "s") == ["after-1", "after-2"]


def test_threads_never_share_a_held_connection(redis_server, redis_url):
    held = HeldConnections()
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    mismatched: list[str] = []

    def add(thread: int) -> None:
        for n in range(50):
            value = f"{thread}-{n}"
            entry_id = held.command(client, "XADD", "s", "*", "v", value)
            # A connection two threads used at once would hand one the other's reply.
            [(_, fields)] = client.xrange("s", entry_id, entry_id)
            if fields["v"] != value:
                mismatched.append(value)

    threads = [threading.Thread(target=add, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    client.close()
    assert mismatched == []
    assert client.xlen("s") == 400


def test_a_forked_child_appends_on_connections_of_its_own(store):
    def connection_id() -> int:
        return store._backend.execute("id", lambda c: store._held.command(c, "CLIENT", "ID"))

    store.append("s", "parent")
    parent_id = connection_id()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its connection, append, and leave at once
        try:
            os.write(writer, str(connection_id()).encode())
            store.append("s", "child")
        finally:
            os._exit(0)
    os.close(writer)
    child_id = int(os.read(reader, 100) or 0)
    os.close(reader)
    os.waitpid(pid, 0)
    store.append("s", "parent-again")
    assert child_id not in (0, parent_id)
    assert connection_id() == parent_id  # the parent's connection is still in step
    assert entries(store, "s") == ["parent", "child", "parent-again"]


def test_closing_the_store_closes_its_held_connections(store, redis_server):
    store.append("s", "x")
    with redis_server.client() as admin:
        before = len(admin.client_list())
        store.close()
        # Redis notices a closed connection when it next reads from it: wait for that.
        assert eventually(lambda: len(admin.client_list()) == before - 1, 10.0, poll=0.01)


def test_a_wrong_password_on_append_is_a_clear_error(new_store, extra_redis):
    server = extra_redis("--requirepass", "s3cret")
    store = new_store(url=f"zmq+redis://:wrong-pw@127.0.0.1:{server.port}")
    with pytest.raises(BackendError) as info:
        store.append("s", "x")
    assert f"127.0.0.1:{server.port}" in str(info.value)
    assert "wrong-pw" not in str(info.value)


# --- retention --------------------------------------------------------------------------


def test_loose_retention_reports_every_message_it_drops(new_store):
    # 1,000 allowed: retention runs every 62 appends (or each second), so the
    # stream may run over by that much, but every drop is reported and counted.
    store = new_store(Retention(1_000, 3600.0))
    reported = 0
    for n in range(1_300):
        reported += sum(store.append("s", str(n)).values())
    kept = store._backend.execute("len", lambda c: c.xlen("s"))
    assert 1_000 <= kept <= 1_064
    assert reported == 1_300 - kept
    counted = store._backend.execute("drops", lambda c: c.hgetall("s" + DROPPED_SUFFIX))
    assert counted == {NO_LISTENER_YET: str(reported)}


# --- redelivery -------------------------------------------------------------------------


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


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
def test_reads_and_acknowledgements_on_either_protocol(store, redis_server, protocol):
    # Reads go on held connections and shape Redis' reply themselves: older redis-py
    # speaks RESP2 by default, redis-py 8 RESP3, whose reply is a map.
    client = redis.Redis(port=redis_server.port, decode_responses=True, protocol=protocol)
    store._backend.hosts[0] = dataclasses.replace(store._backend.hosts[0], client=client)
    stream = f"protocol-{uuid.uuid4().hex[:8]}"
    store.subscribe([stream], "pool", "one")
    for n in range(3):
        store.append(stream, str(n))
    got = store.read([stream], "pool", "one", 10, 1.0)
    assert [(m.stream, m.payload) for m in got] == [(stream, "0"), (stream, "1"), (stream, "2")]
    for message in got:
        store.ack(message, "pool")
    store.flush()
    assert _pending(store, stream) == []
    # The stream and its group gone (Redis restarted empty): the read recreates the group.
    client.delete(stream)
    assert store.read([stream], "pool", "one", 10, 0.05) == []
    store.append(stream, "after")
    assert [m.payload for m in store.read([stream], "pool", "one", 10, 1.0)] == ["after"]


def test_payloads_and_names_beyond_ascii_round_trip(store):
    # pack_command encodes strings as UTF-8 itself, as redis-py's packer does.
    stream, consumer = f"ünïcode-{uuid.uuid4().hex[:8]}", "höst-✓"
    store.subscribe([stream], "pool/mëtering", consumer)
    store.append(stream, '{"text": "héllo ✓ 日本"}')
    got = store.read([stream], "pool/mëtering", consumer, 10, 1.0)
    assert [(m.stream, m.payload) for m in got] == [(stream, '{"text": "héllo ✓ 日本"}')]
