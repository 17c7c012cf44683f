"""The embedded matchmaker: a SQLite file shared by every process of a host.

``zmq://`` needs no server: all processes of one user on one machine open
the same file (under the user's runtime directory by default) and SQLite's
file locking keeps them consistent. The directory is created private (0700)
and the file readable only by its owner.

Each record also remembers the process that registered it. All its readers
are on the same host, so a lookup can tell that a server was killed without
unregistering and drop its records at once instead of at expiry. The check
applies only within one PID namespace (containers sharing the file see
foreign PIDs and rely on expiry).
"""

from __future__ import annotations

import os
import tempfile
import time

from zmqdriver.matchmaker.base import MatchMaker, MatchMakerUnavailable
from zmqdriver.matchmaker.sqlitefile import SQLiteFile

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
    """Records in a SQLite table ``(key, record, expires, pid, pidns)``.

    ``expires`` NULL means never; ``pid``/``pidns`` name the registering process.
    """

    def __init__(self, conf, url) -> None:
        super().__init__(conf, url)
        self.path = conf.oslo_messaging_zmq.zmq_matchmaker_path or default_path()
        _ensure_private_dir(os.path.dirname(self.path) or ".")
        self._db = SQLiteFile(
            self.path, "embedded matchmaker store", _SCHEMA_VERSION, [_SCHEMA], ["records"]
        )
        self._pidns = _pid_namespace()

    def _execute(self, sql: str, args: tuple) -> list[tuple]:
        return self._db.execute(sql, args)

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
            "SELECT record, pid, pidns FROM records "
            "WHERE key = ? AND (expires IS NULL OR expires > ?) ORDER BY record",
            (key, time.time()),
        )
        live = []
        for record, pid, pidns in rows:
            if pidns == self._pidns and not _process_alive(pid):
                self.unregister(key, record)  # its server died without unregistering
            else:
                live.append(record)
        return live

    def notification_store(self, retention, redelivery):
        from zmqdriver.notify.sqlite_store import SQLiteNotificationStore

        directory = os.path.dirname(self.path) or "."
        _ensure_private_dir(directory)
        path = os.path.join(directory, "notifications.sqlite")
        return SQLiteNotificationStore(path, retention, redelivery)

    def close(self) -> None:
        self._db.close()
