"""A private SQLite file shared by the processes of one user: the embedded backend.

``zmq://`` needs no server: the embedded matchmaker and the embedded
notification store are files in one private directory (under the user's
runtime directory by default), and SQLite's file locking keeps the
processes of a host consistent.

One connection per process (a connection must not cross ``fork()``), used
under a lock by every thread. WAL mode lets readers and one writer work at
once; the busy timeout makes writers queue instead of failing.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable
from typing import TypeVar

from zmqdriver.backoff import Backoff, call_with_retry
from zmqdriver.exceptions import BackendUnavailable
from zmqdriver.options import GROUP

T = TypeVar("T")

_BUSY_TIMEOUT = 30.0
_WAL_BACKOFF = Backoff(0.005, 0.2)


def default_path() -> str:
    """Where the embedded matchmaker lives when ``zmq_matchmaker_path`` is not set."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and os.path.isdir(runtime_dir):
        base = os.path.join(runtime_dir, "zmqdriver")
    else:
        base = os.path.join(tempfile.gettempdir(), f"zmqdriver-{os.getuid()}")
    return os.path.join(base, "matchmaker.sqlite")


def matchmaker_path(conf) -> str:
    """The embedded matchmaker's file: the option, or :func:`default_path`."""
    return conf[GROUP].zmq_matchmaker_path or default_path()


def embedded_directory(conf) -> str:
    """The private directory of the embedded files (created 0700, checked to be ours)."""
    directory = os.path.dirname(matchmaker_path(conf)) or "."
    ensure_private_dir(directory)
    return directory


def ensure_private_dir(path: str) -> None:
    """Create ``path`` private (0700); refuse a directory another user owns."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.stat(path)
    if info.st_uid != os.getuid():
        raise BackendUnavailable(
            f"Embedded matchmaker directory {path} belongs to uid {info.st_uid}, not to us "
            f"(uid {os.getuid()}); set [{GROUP}] zmq_matchmaker_path"
        )


class SQLiteFile:
    """One SQLite file with its schema; statements and transactions under a lock."""

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

    def _failed(self, exc: Exception) -> BackendUnavailable:
        return BackendUnavailable(f"{self._what} {self.path} failed: {exc}")

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
            raise BackendUnavailable(f"Cannot open the {self._what} {self.path}: {exc}") from exc
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


class _Locked(Exception):
    """Another process holds the lock that switching to WAL needs: worth another try."""


def _set_wal(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc):
            raise
        raise _Locked() from exc


def retries_within(backoff: Backoff, seconds: float) -> int:
    """How many pauses of ``backoff`` fit in ``seconds`` (a deadline as a retry count).

    >>> retries_within(Backoff(1.0, 4.0), 10.0)
    3
    >>> retries_within(Backoff(1.0, 4.0), 0.5)
    0
    """
    total = 0.0
    for retries, delay in enumerate(backoff.delays()):
        total += delay
        if total > seconds:
            return retries
    raise AssertionError("unreachable: delays() does not end")


def _enable_wal(conn: sqlite3.Connection) -> None:
    # Switching a new file to WAL takes an exclusive lock that the busy
    # timeout does not cover: processes opening a fresh file together must
    # retry (seen as "database is locked" when servers start at once).
    try:
        call_with_retry(
            lambda: _set_wal(conn),
            retry_on=(_Locked,),
            backoff=_WAL_BACKOFF,
            retries=retries_within(_WAL_BACKOFF, _BUSY_TIMEOUT),
        )
    except _Locked as exc:
        raise exc.__cause__ from None  # still locked after the busy timeout: SQLite's error
