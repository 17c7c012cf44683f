"""The embedded notification store: SQLite tables next to the matchmaker file.

Listeners poll (every 10 ms while busy, backing off to 100 ms when idle);
the idle check is a read-only query, so it takes no write lock.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time

from zmqdriver.matchmaker.base import MatchMakerUnavailable
from zmqdriver.notify.store import NotificationStore, Retention, StoredNotification

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        stream TEXT NOT NULL,
        ts REAL NOT NULL,
        payload TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS messages_by_stream ON messages (stream, seq)",
    """CREATE TABLE IF NOT EXISTS groups (
        stream TEXT NOT NULL,
        grp TEXT NOT NULL,
        last_seq INTEGER NOT NULL,
        PRIMARY KEY (stream, grp)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS pending (
        stream TEXT NOT NULL,
        grp TEXT NOT NULL,
        seq INTEGER NOT NULL,
        consumer TEXT NOT NULL,
        visible_at REAL NOT NULL,
        PRIMARY KEY (grp, stream, seq)) WITHOUT ROWID""",
]

_POLL_MIN, _POLL_MAX = 0.01, 0.1


class SQLiteNotificationStore(NotificationStore):
    def __init__(self, path: str, retention: Retention, redelivery: float) -> None:
        super().__init__(retention, redelivery)
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    # -- connection ----------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self._conn = self._open()
            self._pid = os.getpid()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # Durable against a crashed process (the WAL is on disk); only a
            # power loss may lose the last transactions.
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                conn.execute(statement)
        except (OSError, sqlite3.Error) as exc:
            raise MatchMakerUnavailable(
                f"Cannot open the embedded notification store {self.path}: {exc}"
            ) from exc
        return conn

    def _transaction(self, work):
        """Run ``work(conn)`` in a write transaction; SQLite errors become clear ones."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                raise MatchMakerUnavailable(
                    f"Embedded notification store {self.path} failed: {exc}"
                ) from exc

    # -- the contract ----------------------------------------------------------------

    def append(self, stream: str, payload: str) -> dict[str, int]:
        def work(conn: sqlite3.Connection) -> dict[str, int]:
            now = time.time()
            conn.execute(
                "INSERT INTO messages (stream, ts, payload) VALUES (?, ?, ?)",
                (stream, now, payload),
            )
            return self._enforce_retention(conn, stream, now)

        return self._transaction(work)

    def _enforce_retention(self, conn, stream: str, now: float) -> dict[str, int]:
        # The newest seq to drop: beyond max_count, or older than max_age.
        by_count = conn.execute(
            "SELECT seq FROM messages WHERE stream = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
            (stream, self.retention.max_count),
        ).fetchone()
        by_age = conn.execute(
            "SELECT MAX(seq) FROM messages WHERE stream = ? AND ts < ?",
            (stream, now - self.retention.max_age),
        ).fetchone()
        cutoff = max(by_count[0] if by_count else 0, by_age[0] or 0)
        if not cutoff:
            return {}
        dropped = {}
        for group, last_seq in conn.execute(
            "SELECT grp, last_seq FROM groups WHERE stream = ?", (stream,)
        ).fetchall():
            (unread,) = conn.execute(
                "SELECT COUNT(*) FROM messages WHERE stream = ? AND seq > ? AND seq <= ?",
                (stream, last_seq, cutoff),
            ).fetchone()
            if unread:
                dropped[group] = unread
                conn.execute(
                    "UPDATE groups SET last_seq = ? WHERE stream = ? AND grp = ?",
                    (cutoff, stream, group),
                )
        conn.execute("DELETE FROM messages WHERE stream = ? AND seq <= ?", (stream, cutoff))
        conn.execute("DELETE FROM pending WHERE stream = ? AND seq <= ?", (stream, cutoff))
        return dropped

    def subscribe(self, streams: list[str], group: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR IGNORE INTO groups (stream, grp, last_seq) VALUES (?, ?, 0)",
                [(stream, group) for stream in streams],
            )

        self._transaction(work)

    def read(
        self, streams: list[str], group: str, consumer: str, count: int, timeout: float
    ) -> list[StoredNotification]:
        deadline = time.monotonic() + timeout
        poll = _POLL_MIN
        while True:
            if self._has_work(streams, group):
                messages = self._transaction(
                    lambda conn: self._claim(conn, streams, group, consumer, count)
                )
                if messages:
                    return messages
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(poll, remaining))
            poll = min(poll * 2, _POLL_MAX)

    def _has_work(self, streams: list[str], group: str) -> bool:
        """A cheap read-only check, so idle listeners take no write lock."""
        marks = ",".join("?" * len(streams))
        with self._lock:
            try:
                row = (
                    self._connection()
                    .execute(
                        f"""SELECT EXISTS (
                          SELECT 1 FROM groups g JOIN messages m
                            ON m.stream = g.stream AND m.seq > g.last_seq
                          WHERE g.grp = ? AND g.stream IN ({marks}))
                        OR EXISTS (
                          SELECT 1 FROM pending
                          WHERE grp = ? AND stream IN ({marks}) AND visible_at <= ?)""",
                        (group, *streams, group, *streams, time.time()),
                    )
                    .fetchone()
                )
            except sqlite3.Error as exc:
                raise MatchMakerUnavailable(
                    f"Embedded notification store {self.path} failed: {exc}"
                ) from exc
        return bool(row[0])

    def _claim(self, conn, streams, group, consumer, count) -> list[StoredNotification]:
        now = time.time()
        marks = ",".join("?" * len(streams))
        due = conn.execute(
            f"""SELECT p.stream, p.seq, m.payload FROM pending p
                JOIN messages m ON m.seq = p.seq
                WHERE p.grp = ? AND p.stream IN ({marks}) AND p.visible_at <= ?
                ORDER BY p.seq LIMIT ?""",
            (group, *streams, now, count),
        ).fetchall()
        fresh = []
        for stream in streams:
            if len(due) + len(fresh) >= count:
                break
            fresh += conn.execute(
                """SELECT m.stream, m.seq, m.payload FROM messages m
                   JOIN groups g ON g.stream = m.stream AND g.grp = ?
                   WHERE m.stream = ? AND m.seq > g.last_seq ORDER BY m.seq LIMIT ?""",
                (group, stream, count - len(due) - len(fresh)),
            ).fetchall()
        visible_at = now + self.redelivery
        conn.executemany(
            "INSERT OR REPLACE INTO pending (stream, grp, seq, consumer, visible_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(stream, group, seq, consumer, visible_at) for stream, seq, _ in due + fresh],
        )
        for stream in {stream for stream, _, _ in fresh}:
            conn.execute(
                "UPDATE groups SET last_seq = ? WHERE stream = ? AND grp = ?",
                (max(seq for s, seq, _ in fresh if s == stream), stream, group),
            )
        return [
            StoredNotification(stream, str(seq), payload) for stream, seq, payload in due + fresh
        ]

    def ack(self, message: StoredNotification, group: str) -> None:
        self._transaction(
            lambda conn: conn.execute(
                "DELETE FROM pending WHERE grp = ? AND stream = ? AND seq = ?",
                (group, message.stream, int(message.id)),
            )
        )

    def requeue(self, message: StoredNotification, group: str) -> None:
        self._transaction(
            lambda conn: conn.execute(
                "UPDATE pending SET visible_at = 0 WHERE grp = ? AND stream = ? AND seq = ?",
                (group, message.stream, int(message.id)),
            )
        )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
