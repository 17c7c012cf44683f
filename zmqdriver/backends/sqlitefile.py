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

# How long a statement waits for a lock another connection holds before it fails.
_BUSY_TIMEOUT = 30.0
# Those waits are ours, not SQLite's: its busy handler sleeps 1 ms at least
# (then 2, 5, 10 ... ms), so a notifier spent 15-30 % of its time behind the
# listener's claims, each a fraction of a millisecond (doc/benchmarks.md).
_BUSY_BACKOFF = Backoff(0.0001, 0.01)


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


_BUSY_RETRIES = retries_within(_BUSY_BACKOFF, _BUSY_TIMEOUT)


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
                rows = patiently(lambda: conn.execute(sql, args).fetchall())
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
                patiently(lambda: conn.execute("BEGIN IMMEDIATE"))
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
                conn = self._connection()
                (data_version,) = patiently(lambda: conn.execute("PRAGMA data_version").fetchone())
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
            # No busy handler of SQLite's: ``patiently`` waits for locks instead.
            conn = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False
            )
            patiently(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            # Durable against a crashed process (the WAL is on disk); only a
            # power loss may lose the last transactions.
            conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate(conn)
        except (OSError, sqlite3.Error) as exc:
            raise BackendUnavailable(f"Cannot open the {self._what} {self.path}: {exc}") from exc
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        patiently(lambda: conn.execute("BEGIN IMMEDIATE"))
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
    """Another connection holds the lock a statement needs: worth another try."""


def _lock_as_retryable(statement: Callable[[], T]) -> T:
    try:
        return statement()
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        raise _Locked() from exc


def patiently(statement: Callable[[], T]) -> T:
    """``statement()``, tried again while another connection holds a lock it needs
    (switching a new file to WAL, starting a write), for up to ``_BUSY_TIMEOUT``.

    After that, SQLite's own "database is locked" error is raised.
    """
    try:
        return call_with_retry(
            lambda: _lock_as_retryable(statement),
            retry_on=(_Locked,),
            backoff=_BUSY_BACKOFF,
            retries=_BUSY_RETRIES,
        )
    except _Locked as exc:
        raise exc.__cause__ from None
