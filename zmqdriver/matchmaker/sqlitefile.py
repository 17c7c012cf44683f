"""A private SQLite file shared by the processes of one user: the embedded stores' base.

One connection per process (a connection must not cross ``fork()``), used
under a lock by every thread. WAL mode lets readers and one writer work at
once; the busy timeout makes writers queue instead of failing.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from zmqdriver.matchmaker.base import MatchMakerUnavailable

T = TypeVar("T")

_BUSY_TIMEOUT = 30.0


class SQLiteFile:
    def __init__(
        self, path: str, what: str, version: int, schema: list[str], tables: list[str]
    ) -> None:
        """``schema`` creates ``tables``; a file at another ``version`` has them dropped.

        The stores hold soft state only (servers re-register, senders resend),
        so a schema change simply starts afresh.
        """
        self.path = path
        self._what = what
        self._version = version
        self._schema = schema
        self._tables = tables
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._own_commits = 0  # data_version does not count our own commits

    def execute(self, sql: str, args: tuple = ()) -> list[tuple]:
        """One statement in its own (autocommit) transaction."""
        with self._lock:
            try:
                conn = self._connection()
                changes = conn.total_changes
                rows = conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc
            self._count_commit(conn, changes)
            return rows

    def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(conn)`` in one write transaction."""
        with self._lock:
            try:
                conn = self._connection()
                changes = conn.total_changes
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc
            self._count_commit(conn, changes)
            return result

    def _count_commit(self, conn: sqlite3.Connection, changes_before: int) -> None:
        # Only commits that changed rows: counting empty ones would make every
        # reader see "news" after each of its own empty polls.
        if conn.total_changes != changes_before:
            self._own_commits += 1

    def change_token(self) -> tuple[int, int]:
        """Differs from the previous call's whenever anyone has committed since."""
        with self._lock:
            try:
                (data_version,) = self._connection().execute("PRAGMA data_version").fetchone()
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc
            return data_version, self._own_commits

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def _failed(self, exc: Exception) -> MatchMakerUnavailable:
        return MatchMakerUnavailable(f"{self._what} {self.path} failed: {exc}")

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
                self.path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            _enable_wal(conn)
            # Durable against a crashed process (the WAL is on disk); only a
            # power loss may lose the last transactions.
            conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate(conn)
        except (OSError, sqlite3.Error) as exc:
            raise MatchMakerUnavailable(f"Cannot open the {self._what} {self.path}: {exc}") from exc
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] != self._version:
                for table in self._tables:
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                conn.execute(f"PRAGMA user_version = {self._version}")
            for statement in self._schema:
                conn.execute(statement)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _enable_wal(conn: sqlite3.Connection) -> None:
    # Switching a new file to WAL takes an exclusive lock that the busy
    # timeout does not cover: processes opening a fresh file together must
    # retry (seen as "database is locked" when servers start at once).
    deadline = time.monotonic() + _BUSY_TIMEOUT
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
