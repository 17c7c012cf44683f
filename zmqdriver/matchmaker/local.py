"""The embedded matchmaker: a SQLite file shared by every process of a host.

``zmq://`` needs no server: all processes of one user on one machine open
the same file (under the user's runtime directory by default) and SQLite's
file locking keeps them consistent. The directory is created private (0700)
and the file readable only by its owner.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
import time

from zmqdriver.matchmaker.base import MatchMaker, MatchMakerUnavailable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    key TEXT NOT NULL,
    record TEXT NOT NULL,
    expires REAL,
    PRIMARY KEY (key, record)
) WITHOUT ROWID
"""


def default_path() -> str:
    """Where the store lives when ``zmq_matchmaker_path`` is not set."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and os.path.isdir(runtime_dir):
        base = os.path.join(runtime_dir, "zmqdriver")
    else:
        base = os.path.join(tempfile.gettempdir(), f"zmqdriver-{os.getuid()}")
    return os.path.join(base, "matchmaker.sqlite")


def _ensure_private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.stat(path)
    if info.st_uid != os.getuid():
        raise MatchMakerUnavailable(
            f"Embedded matchmaker directory {path} belongs to uid {info.st_uid}, not to us "
            f"(uid {os.getuid()}); set [oslo_messaging_zmq] zmq_matchmaker_path"
        )


class LocalMatchMaker(MatchMaker):
    """Records in a SQLite table ``(key, record, expires)``; ``expires`` NULL = never."""

    def __init__(self, conf, url) -> None:
        super().__init__(conf, url)
        self.path = conf.oslo_messaging_zmq.zmq_matchmaker_path or default_path()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0

    def _connection(self) -> sqlite3.Connection:
        # A connection must not cross fork(): a child opens its own.
        if self._conn is None or self._pid != os.getpid():
            self._conn = self._open()
            self._pid = os.getpid()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        _ensure_private_dir(os.path.dirname(self.path) or ".")
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
            conn = sqlite3.connect(
                self.path, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise MatchMakerUnavailable(
                f"Cannot open the embedded matchmaker store {self.path}: {exc}"
            ) from exc
        return conn

    def _execute(self, sql: str, args: tuple) -> list[tuple]:
        with self._lock:
            try:
                return self._connection().execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise MatchMakerUnavailable(
                    f"Embedded matchmaker store {self.path} failed: {exc}"
                ) from exc

    def register(self, key: str, record: str, expire: float) -> None:
        now = time.time()
        expires = now + expire if expire > 0 else None
        self._execute(
            "INSERT OR REPLACE INTO records (key, record, expires) VALUES (?, ?, ?)",
            (key, record, expires),
        )
        # Keep the table small: records of crashed processes are purged here.
        self._execute("DELETE FROM records WHERE expires < ?", (now,))

    def unregister(self, key: str, record: str) -> None:
        self._execute("DELETE FROM records WHERE key = ? AND record = ?", (key, record))

    def lookup(self, key: str) -> list[str]:
        rows = self._execute(
            "SELECT record FROM records WHERE key = ? AND (expires IS NULL OR expires > ?) "
            "ORDER BY record",
            (key, time.time()),
        )
        return [row[0] for row in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
