"""The embedded matchmaker: a SQLite file shared by every process of a host.

``zmq://`` needs no server: all processes of one user on one machine open
the same file (under the user's runtime directory by default) and SQLite's
file locking keeps them consistent. The directory is created private (0700)
and the file readable only by its owner (:mod:`zmqdriver.backends.sqlitefile`).

Each record also remembers the process that registered it. All its readers
are on the same host, so a lookup can tell that a server was killed without
unregistering and drop its records at once instead of at expiry. The check
applies only within one PID namespace (containers sharing the file see
foreign PIDs and rely on expiry).
"""

from __future__ import annotations

import os
import time

from oslo_config import cfg
from oslo_messaging import TransportURL

from zmqdriver.backends.sqlitefile import SQLiteFile, embedded_directory, matchmaker_path
from zmqdriver.matchmaker.base import ListedRecord, MatchMaker

# Bump when the table changes: the store holds only soft state, so an old
# table is simply dropped (servers re-register within zmq_target_update).
_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    key TEXT NOT NULL,
    record TEXT NOT NULL,
    expires REAL,
    pid INTEGER NOT NULL,
    pidns TEXT NOT NULL,
    PRIMARY KEY (key, record)
) WITHOUT ROWID
"""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return "unknown"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


class LocalMatchMaker(MatchMaker):
    """Records in a SQLite table ``(key, record, expires, pid, pidns)``.

    ``expires`` NULL means never; ``pid``/``pidns`` name the registering process.
    """

    def __init__(self, conf: cfg.ConfigOpts, url: TransportURL) -> None:
        super().__init__(conf, url)
        embedded_directory(conf)  # created private before the file is
        self.path = matchmaker_path(conf)
        self.backend: SQLiteFile = SQLiteFile(
            self.path, "embedded matchmaker store", _SCHEMA_VERSION, [_SCHEMA], ["records"]
        )
        self._pidns = _pid_namespace()

    def _execute(self, sql: str, args: tuple) -> list[tuple]:
        return self.backend.execute(sql, args)

    def register(self, key: str, record: str, expire: float) -> None:
        now = time.time()
        expires = now + expire if expire > 0 else None
        self._execute(
            "INSERT OR REPLACE INTO records (key, record, expires, pid, pidns) "
            "VALUES (?, ?, ?, ?, ?)",
            (key, record, expires, os.getpid(), self._pidns),
        )
        # Keep the table small: records of crashed processes are purged here.
        self._execute("DELETE FROM records WHERE expires < ?", (now,))

    def unregister(self, key: str, record: str) -> None:
        self._execute("DELETE FROM records WHERE key = ? AND record = ?", (key, record))

    def lookup(self, key: str) -> list[str]:
        rows = self._execute(
            "SELECT key, record, expires, pid, pidns FROM records "
            "WHERE key = ? AND (expires IS NULL OR expires > ?) ORDER BY record",
            (key, time.time()),
        )
        return [row[1] for row in self._alive(rows)]

    def records(self, prefix: str) -> list[ListedRecord]:
        now = time.time()
        rows = self._execute(
            "SELECT key, record, expires, pid, pidns FROM records "
            "WHERE substr(key, 1, ?) = ? AND (expires IS NULL OR expires > ?) "
            "ORDER BY key, record",
            (len(prefix), prefix, now),
        )
        return [
            ListedRecord(key, record, None if expires is None else expires - now)
            for key, record, expires, _, _ in self._alive(rows)
        ]

    def _alive(self, rows: list[tuple]) -> list[tuple]:
        """Rows ``(key, record, expires, pid, pidns)`` whose process lives (same namespace)."""
        live = []
        for row in rows:
            key, record, _, pid, pidns = row
            if pidns == self._pidns and not _process_alive(pid):
                self.unregister(key, record)  # its server died without unregistering
            else:
                live.append(row)
        return live

    def close(self) -> None:
        self.backend.close()
