"""The embedded (SQLite) notification store in-process: assignment, bulk reads, retention."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zmqdriver.notify import sqlite_store
from zmqdriver.notify.sqlite_store import SQLiteNotificationStore
from zmqdriver.notify.store import Retention

STREAM = "test/notify/openstack/t.info"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteNotificationStore]:
    store = SQLiteNotificationStore(str(tmp_path / "n.sqlite"), Retention(10_000, 3600.0), 30.0)
    yield store
    store.close()


def pending(store: SQLiteNotificationStore) -> list[tuple[str, int]]:
    return store._db.execute("SELECT consumer, delivered FROM pending ORDER BY seq")


def test_appends_for_a_lone_listener_assign_nothing_and_it_reads_the_backlog_in_bulk(store):
    store.subscribe([STREAM], "pool", "only")
    for n in range(100):
        store.append(STREAM, f"m{n}")
    assert pending(store) == []  # no writes to balance with nobody to balance between
    first = store.read([STREAM], "pool", "only", 1, 0.1)
    assert [m.payload for m in first] == [f"m{n}" for n in range(sqlite_store._PREFETCH)]
    assert pending(store) == [("only", 1)] * sqlite_store._PREFETCH  # delivered, awaiting acks
    rest = store.read([STREAM], "pool", "only", 1, 0.1)
    assert [m.payload for m in rest] == [f"m{n}" for n in range(sqlite_store._PREFETCH, 100)]


def test_appends_for_two_listeners_are_assigned_in_turn_and_each_reads_its_own(store):
    store.subscribe([STREAM], "pool", "a")
    store.subscribe([STREAM], "pool", "b")
    for n in range(6):
        store.append(STREAM, f"m{n}")
    assert pending(store) == [("a", 0), ("b", 0)] * 3
    assert [m.payload for m in store.read([STREAM], "pool", "a", 10, 0.1)] == ["m0", "m2", "m4"]
    assert [m.payload for m in store.read([STREAM], "pool", "b", 10, 0.1)] == ["m1", "m3", "m5"]


def test_appends_for_a_lone_listener_skip_the_reads_that_assigning_needs(store):
    store.subscribe([STREAM], "pool", "only")
    store.append(STREAM, "m0")  # looks at the stream's groups: one listener, no balance
    statements: list[str] = []
    store._db._connection().set_trace_callback(statements.append)
    for n in range(1, 11):
        store.append(STREAM, f"m{n}")
    assert sum(s.startswith("INSERT INTO messages") for s in statements) == 10
    assert not [s for s in statements if "MAX(seq)" in s or "last_seq, rr" in s]


def test_a_second_listener_gets_assignments_once_the_view_of_the_groups_is_a_second_old(
    store, monkeypatch
):
    store.subscribe([STREAM], "pool", "a")
    store.append(STREAM, "m0")  # the view: one listener
    store.subscribe([STREAM], "pool", "b")
    store.append(STREAM, "m1")
    assert pending(store) == []  # the view is fresh: unassigned, read in bulk
    assert [m.payload for m in store.read([STREAM], "pool", "a", 10, 0.1)] == ["m0", "m1"]
    later = time.time() + 1.5
    monkeypatch.setattr(sqlite_store.time, "time", lambda: later)
    for n in range(2, 6):
        store.append(STREAM, f"m{n}")
    assert [m.payload for m in store.read([STREAM], "pool", "b", 10, 0.1)] == ["m3", "m5"]
    assert [m.payload for m in store.read([STREAM], "pool", "a", 10, 0.1)] == ["m2", "m4"]


def test_age_retention_drops_the_messages_older_than_the_horizon(store):
    def insert(conn) -> None:
        rows = [(stream, float(ts), "x") for ts in range(1, 10_001) for stream in (STREAM, "other")]
        conn.executemany("INSERT INTO messages (stream, ts, payload) VALUES (?, ?, ?)", rows)

    store._db.transaction(insert)

    def cutoff(horizon: float) -> int:
        return store._db.transaction(lambda conn: store._age_cutoff(conn, STREAM, horizon))

    def seq_at(ts: float) -> int:
        return store._db.execute(
            "SELECT seq FROM messages WHERE stream = ? AND ts = ?", (STREAM, ts)
        )[0][0]

    assert cutoff(0.5) == 0  # the oldest is younger: nothing to drop
    assert cutoff(1.5) == seq_at(1.0)
    assert cutoff(5000.5) == seq_at(5000.0)  # across several chunks of the walk
    assert cutoff(1e9) == seq_at(10_000.0)  # everything


def kept(store: SQLiteNotificationStore, stream: str) -> list[str]:
    rows = store._db.execute(
        "SELECT payload FROM messages WHERE stream = ? ORDER BY seq", (stream,)
    )
    return [payload for (payload,) in rows]


@pytest.mark.parametrize("others_between", [0, 3], ids=["alone", "interleaved"])
def test_count_retention_keeps_the_newest_of_a_stream_whoever_else_appends(
    tmp_path, others_between
):
    store = SQLiteNotificationStore(str(tmp_path / "n.sqlite"), Retention(8, 3600.0), 30.0)
    dropped = 0
    for n in range(20):
        dropped += sum(store.append(STREAM, f"m{n}").values())
        for _ in range(others_between):  # seqs are shared: the stream's span outgrows its count
            store.append("other", "x")
    assert kept(store, STREAM) == [f"m{n}" for n in range(12, 20)]
    assert dropped == 12
    store.close()


def test_a_stream_whose_span_of_seqs_exceeds_its_count_loses_nothing(tmp_path):
    store = SQLiteNotificationStore(str(tmp_path / "n.sqlite"), Retention(8, 3600.0), 30.0)
    for n in range(6):
        assert store.append(STREAM, f"m{n}") == {}
        for _ in range(5):
            store.append("other", "x")
    assert kept(store, STREAM) == [f"m{n}" for n in range(6)]
    store.close()


def test_a_file_made_with_the_age_index_loses_it_and_keeps_its_messages(tmp_path):
    path = str(tmp_path / "old.sqlite")
    old = SQLiteNotificationStore(path, Retention(10_000, 3600.0), 30.0)
    old.append(STREAM, "kept")
    old._db.execute("CREATE INDEX messages_by_age ON messages (stream, ts)")
    old.close()
    store = SQLiteNotificationStore(path, Retention(10_000, 3600.0), 30.0)
    store.subscribe([STREAM], "pool", "only")
    assert [m.payload for m in store.read([STREAM], "pool", "only", 1, 0.1)] == ["kept"]
    indexes = store._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
    assert ("messages_by_age",) not in indexes
    store.close()
