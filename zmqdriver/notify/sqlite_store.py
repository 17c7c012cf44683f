"""The embedded notification store: SQLite tables in a file next to the matchmaker's.

Balance without a broker: listeners pull, so whoever polls first would take
a whole burst. Instead ``append`` assigns each message, per group, to one of
the group's live listeners in turn (round robin), and each listener reads
its own assignments first. A group with one live listener needs no
balance: appends assign nothing, and that listener takes the backlog in bulk.
Assignments a listener does not pick up within
``_ASSIGN_GRACE`` seconds (it died) go to any listener of the group, as do
delivered messages not acknowledged within ``redelivery`` seconds.

Listeners notice new data through ``PRAGMA data_version``, a counter SQLite
bumps when another connection commits, so an idle listener's poll writes
nothing and takes no write lock.
"""

from __future__ import annotations

import sqlite3
import threading
import time

from zmqdriver import metrics
from zmqdriver.backends.sqlitefile import SQLiteFile
from zmqdriver.backoff import Backoff
from zmqdriver.notify.store import (
    NO_LISTENER_YET,
    GroupBacklog,
    NotificationStore,
    Retention,
    StoredNotification,
)

_SCHEMA_VERSION = 2
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        stream TEXT NOT NULL,
        ts REAL NOT NULL,
        payload TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS messages_by_stream ON messages (stream, seq)",
    # Each index is one more page every append writes; age retention walks seq
    # order instead (_age_cutoff). Dropped from files made before.
    "DROP INDEX IF EXISTS messages_by_age",
    """CREATE TABLE IF NOT EXISTS groups (
        stream TEXT NOT NULL,
        grp TEXT NOT NULL,
        last_seq INTEGER NOT NULL,  -- newest message handed out or assigned
        rr INTEGER NOT NULL,        -- round-robin position among live consumers
        PRIMARY KEY (stream, grp)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS consumers (
        stream TEXT NOT NULL,
        grp TEXT NOT NULL,
        consumer TEXT NOT NULL,
        seen_at REAL NOT NULL,
        PRIMARY KEY (stream, grp, consumer)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS pending (
        stream TEXT NOT NULL,
        grp TEXT NOT NULL,
        seq INTEGER NOT NULL,
        consumer TEXT NOT NULL,
        delivered INTEGER NOT NULL,  -- 0: assigned, not yet read
        visible_at REAL NOT NULL,    -- from then on any consumer of the group may take it
        PRIMARY KEY (grp, stream, seq)) WITHOUT ROWID""",
    # Added without a version bump (IF NOT EXISTS): a bump would drop stored messages.
    """CREATE TABLE IF NOT EXISTS dropped (
        stream TEXT NOT NULL,
        grp TEXT NOT NULL,
        count INTEGER NOT NULL,     -- unread messages retention dropped, in total
        PRIMARY KEY (stream, grp)) WITHOUT ROWID""",
]

# An idle listener polls ever more slowly, up to 0.05 s: the first
# notification after a quiet spell waits at most that long. Each poll costs
# about 0.15 ms of CPU on the benchmark machine, so 0.05 s keeps an idle
# listener near 0.5 % of a core (0.02 s cost 1.4 %).
_POLL = Backoff(0.002, 0.05)
_LIVENESS = 3.0  # a consumer that has not polled for this long gets no new assignments
_SEEN_EVERY = 1.0  # how often a polling consumer refreshes its seen_at
_ASSIGN_GRACE = 5.0  # assigned but unread for this long: anyone of the group may take it
_PREFETCH = 64  # a listener takes up to this many of its own assignments per transaction
_AGE_CHUNK_MAX = 4096  # rows age retention reads at once


class SQLiteNotificationStore(NotificationStore):
    def __init__(self, path: str, retention: Retention, redelivery: float) -> None:
        super().__init__(retention, redelivery)
        self.path = path
        self._db = SQLiteFile(
            path,
            "embedded notification store",
            _SCHEMA_VERSION,
            _SCHEMA,
            ["messages", "groups", "consumers", "pending", "dropped"],
        )
        self._seen: dict[tuple[str, str], float] = {}
        self._due_checked: dict[tuple[str, str], float] = {}
        self._live: dict[tuple[str, str], tuple[float, list[str]]] = {}
        self._balanced: dict[str, tuple[float, bool]] = {}  # see _balancing
        # Acknowledgements are written in batches, with the next transaction
        # anyway (a crash loses only acks: those messages come again).
        self._acks: list[tuple[str, str, int]] = []
        self._acks_lock = threading.Lock()

    # -- appending ----------------------------------------------------------------------

    def append(self, stream: str, payload: str) -> dict[str, int]:
        def work(conn: sqlite3.Connection) -> dict[str, int]:
            now = time.time()
            balancing = self._balancing(conn, stream, now)
            if balancing:
                (previous,) = conn.execute(
                    "SELECT MAX(seq) FROM messages WHERE stream = ?", (stream,)
                ).fetchone()
            seq = conn.execute(
                "INSERT INTO messages (stream, ts, payload) VALUES (?, ?, ?)",
                (stream, now, payload),
            ).lastrowid
            if balancing:
                self._assign(conn, stream, seq, previous or 0, now)
            if self.retention_schedule.due(stream):
                return self._enforce_retention(conn, stream, now)
            return {}

        return self._db.transaction(work)

    def _live_consumers(self, conn, stream: str, group: str, now: float) -> list[str]:
        # Membership changes rarely: a second-old view is good enough to assign.
        cached = self._live.get((stream, group))
        if cached and now - cached[0] < 1.0:
            return cached[1]
        live = [
            consumer
            for (consumer,) in conn.execute(
                "SELECT consumer FROM consumers WHERE stream = ? AND grp = ? "
                "AND seen_at > ? ORDER BY consumer",
                (stream, group, now - _LIVENESS),
            )
        ]
        self._live[(stream, group)] = (now, live)
        return live

    def _balancing(self, conn, stream: str, now: float) -> bool:
        """Whether a group of ``stream`` has two live listeners or more, so appends assign.

        A second-old view, as ``_live_consumers``: most streams have one listener per
        group, and their appends then skip the two reads that assigning needs (7 of an
        append's 41 µs, measured). Messages appended unassigned are read in bulk, and
        once balancing starts ``_assign`` leaves such a backlog to the readers.
        """
        cached = self._balanced.get(stream)
        if cached and now - cached[0] < 1.0:
            return cached[1]
        groups = conn.execute("SELECT grp FROM groups WHERE stream = ?", (stream,)).fetchall()
        balancing = any(len(self._live_consumers(conn, stream, g, now)) >= 2 for (g,) in groups)
        self._balanced[stream] = (now, balancing)
        return balancing

    def _assign(self, conn, stream: str, seq: int, previous: int, now: float) -> None:
        groups = conn.execute(
            "SELECT grp, last_seq, rr FROM groups WHERE stream = ?", (stream,)
        ).fetchall()
        for group, last_seq, rr in groups:
            if last_seq < previous:
                continue  # a backlog nobody has read yet: keep order, let readers take it
            live = self._live_consumers(conn, stream, group, now)
            if len(live) < 2:
                # Nobody to balance between: a lone listener takes the backlog in
                # bulk (``_claim``), which spares every append two writes.
                continue
            conn.execute(
                "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?, 0, ?)",
                (stream, group, seq, live[rr % len(live)], now + _ASSIGN_GRACE),
            )
            conn.execute(
                "UPDATE groups SET last_seq = ?, rr = ? WHERE stream = ? AND grp = ?",
                (seq, rr + 1, stream, group),
            )

    def _enforce_retention(self, conn, stream: str, now: float) -> dict[str, int]:
        # The newest seq to drop: beyond max_count, or older than max_age.
        by_age = self._age_cutoff(conn, stream, now - self.retention.max_age)
        cutoff = max(self._count_cutoff(conn, stream), by_age)
        if not cutoff:
            return {}
        groups = conn.execute("SELECT grp FROM groups WHERE stream = ?", (stream,)).fetchall()
        if not groups:
            (unread,) = conn.execute(
                "SELECT COUNT(*) FROM messages WHERE stream = ? AND seq <= ?", (stream, cutoff)
            ).fetchone()
            dropped = {NO_LISTENER_YET: unread}
        else:
            dropped = {}
        for (group,) in groups:
            (unread,) = conn.execute(
                """SELECT COUNT(*) FROM messages m JOIN groups g
                     ON g.stream = m.stream AND g.grp = ?
                   WHERE m.stream = ? AND m.seq <= ?
                     AND (m.seq > g.last_seq OR m.seq IN (
                       SELECT seq FROM pending p
                       WHERE p.stream = m.stream AND p.grp = g.grp))""",
                (group, stream, cutoff),
            ).fetchone()
            if unread:
                dropped[group] = unread
        conn.execute(
            "UPDATE groups SET last_seq = ? WHERE stream = ? AND last_seq < ?",
            (cutoff, stream, cutoff),
        )
        conn.execute("DELETE FROM messages WHERE stream = ? AND seq <= ?", (stream, cutoff))
        conn.execute("DELETE FROM pending WHERE stream = ? AND seq <= ?", (stream, cutoff))
        # Kept for zmqdriver-status: the sender's log line is gone by the time anyone asks.
        conn.executemany(
            "INSERT INTO dropped VALUES (?, ?, ?) "
            "ON CONFLICT (stream, grp) DO UPDATE SET count = count + excluded.count",
            [(stream, group, count) for group, count in dropped.items()],
        )
        return dropped

    def _count_cutoff(self, conn, stream: str) -> int:
        """The newest seq of ``stream`` beyond its newest ``max_count`` (0: none).

        Counting walks the stream's newest ``max_count`` rows (7 ms at 100,000 here),
        so it is skipped while the stream's span of seqs, its two ends in the index,
        shows it cannot hold more than that.
        """
        limit = self.retention.max_count
        (oldest,) = conn.execute(
            "SELECT MIN(seq) FROM messages WHERE stream = ?", (stream,)
        ).fetchone()
        (newest,) = conn.execute(
            "SELECT MAX(seq) FROM messages WHERE stream = ?", (stream,)
        ).fetchone()
        if oldest is None or newest - oldest < limit:
            return 0
        row = conn.execute(
            "SELECT seq FROM messages WHERE stream = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
            (stream, limit),
        ).fetchone()
        return row[0] if row else 0

    @staticmethod
    def _age_cutoff(conn, stream: str, horizon: float) -> int:
        """The newest seq of ``stream`` appended before ``horizon`` (0: none).

        Appends take the write lock one at a time, so a stream's timestamps grow
        with seq and the old messages are a prefix: read from the oldest, one row
        first (usually young enough), then in growing chunks while all are old.
        """
        cutoff, after, chunk = 0, 0, 1
        while True:
            rows = conn.execute(
                "SELECT seq, ts FROM messages WHERE stream = ? AND seq > ? ORDER BY seq LIMIT ?",
                (stream, after, chunk),
            ).fetchall()
            old = [seq for seq, ts in rows if ts < horizon]
            if old:
                cutoff = old[-1]
            if len(old) < chunk:
                return cutoff
            after, chunk = cutoff, min(chunk * 64, _AGE_CHUNK_MAX)

    # -- subscribing --------------------------------------------------------------------

    def subscribe(self, streams: list[str], group: str, consumer: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.executemany(
                "INSERT OR IGNORE INTO groups (stream, grp, last_seq, rr) VALUES (?, ?, 0, 0)",
                [(stream, group) for stream in streams],
            )
            conn.executemany(
                "INSERT OR REPLACE INTO consumers VALUES (?, ?, ?, ?)",
                [(stream, group, consumer, now) for stream in streams],
            )

        self._db.transaction(work)
        self._seen[(group, consumer)] = time.monotonic()

    def unsubscribe(self, streams: list[str], group: str, consumer: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            self._write_acks(conn)
            marks = ",".join("?" * len(streams))
            conn.execute(
                f"DELETE FROM consumers WHERE grp = ? AND consumer = ? AND stream IN ({marks})",
                (group, consumer, *streams),
            )
            # What was assigned to us but never read goes to the others at once.
            conn.execute(
                f"UPDATE pending SET consumer = '', visible_at = 0 WHERE grp = ? "
                f"AND consumer = ? AND delivered = 0 AND stream IN ({marks})",
                (group, consumer, *streams),
            )

        self._db.transaction(work)

    # -- reading ------------------------------------------------------------------------

    def read(
        self, streams: list[str], group: str, consumer: str, count: int, timeout: float
    ) -> list[StoredNotification]:
        deadline = time.monotonic() + timeout
        pauses, seen_version = _POLL.delays(), None
        while True:
            version = self._db.change_token()
            if version != seen_version or self._due_check(group, consumer):
                seen_version = version
                messages = self._db.transaction(
                    lambda conn: self._claim(conn, streams, group, consumer, count)
                )
                if messages:
                    return messages
                pauses = _POLL.delays()  # something changed: look again soon
            self.flush()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(next(pauses), remaining))

    def _due_check(self, group: str, consumer: str) -> bool:
        # Redeliveries become due by the clock, not by a commit: look once a second.
        now = time.monotonic()
        if now - self._due_checked.get((group, consumer), 0.0) >= _SEEN_EVERY:
            self._due_checked[(group, consumer)] = now
            return True
        return False

    def _claim(self, conn, streams, group, consumer, count) -> list[StoredNotification]:
        now = time.time()
        self._write_acks(conn)
        self._touch(conn, streams, group, consumer, now)
        marks = ",".join("?" * len(streams))
        # Our own assignments in bulk (the listener keeps the surplus), then
        # anything due for redelivery, then the unassigned backlog.
        claimed = conn.execute(
            f"""SELECT stream, seq FROM pending
                WHERE grp = ? AND stream IN ({marks}) AND consumer = ? AND delivered = 0
                ORDER BY seq LIMIT ?""",
            (group, *streams, consumer, max(count, _PREFETCH)),
        ).fetchall()
        if len(claimed) < count:
            due = conn.execute(
                f"""SELECT stream, seq FROM pending
                    WHERE grp = ? AND stream IN ({marks}) AND visible_at <= ?
                      AND NOT (consumer = ? AND delivered = 0)
                    ORDER BY seq LIMIT ?""",
                (group, *streams, now, consumer, count - len(claimed)),
            ).fetchall()
            metrics.incr("notifications_redelivered", len(due))
            claimed += due
        for stream in streams:
            if len(claimed) >= count:
                break
            # Alone in the group, take the backlog in bulk as our own assignments
            # (the listener keeps the surplus): appends assign nothing then.
            alone = len(self._live_consumers(conn, stream, group, now)) < 2
            wanted = (max(count, _PREFETCH) if alone else count) - len(claimed)
            backlog = conn.execute(
                """SELECT m.stream, m.seq FROM messages m
                   JOIN groups g ON g.stream = m.stream AND g.grp = ?
                   WHERE m.stream = ? AND m.seq > g.last_seq ORDER BY m.seq LIMIT ?""",
                (group, stream, wanted),
            ).fetchall()
            if backlog:
                conn.execute(
                    "UPDATE groups SET last_seq = ? WHERE stream = ? AND grp = ?",
                    (backlog[-1][1], stream, group),
                )
                claimed += backlog
        conn.executemany(
            "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?, 1, ?)",
            [(stream, group, seq, consumer, now + self.redelivery) for stream, seq in claimed],
        )
        if not claimed:
            return []
        payloads = dict(
            conn.execute(
                f"SELECT seq, payload FROM messages WHERE seq IN ({','.join('?' * len(claimed))})",
                [seq for _, seq in claimed],
            ).fetchall()
        )
        return [
            StoredNotification(stream, str(seq), payloads[seq])
            for stream, seq in claimed
            if seq in payloads
        ]

    def _touch(self, conn, streams, group, consumer, now) -> None:
        key = (group, consumer)
        if time.monotonic() - self._seen.get(key, 0.0) < _SEEN_EVERY:
            return
        self._seen[key] = time.monotonic()
        conn.executemany(
            "INSERT OR REPLACE INTO consumers VALUES (?, ?, ?, ?)",
            [(stream, group, consumer, now) for stream in streams],
        )

    # -- looking in (zmqdriver-status) ----------------------------------------------

    def backlogs(self, prefix: str) -> list[GroupBacklog]:
        return self._db.transaction(lambda conn: self._backlogs(conn, prefix, time.time()))

    @staticmethod
    def _backlogs(conn, prefix: str, now: float) -> list[GroupBacklog]:
        streams = [
            stream
            for (stream,) in conn.execute(
                "SELECT stream FROM messages WHERE substr(stream, 1, ?) = ? "
                "UNION SELECT stream FROM groups WHERE substr(stream, 1, ?) = ? ORDER BY 1",
                (len(prefix), prefix, len(prefix), prefix),
            )
        ]
        found = []
        for stream in streams:
            dropped = dict(
                conn.execute("SELECT grp, count FROM dropped WHERE stream = ?", (stream,))
            )
            groups = conn.execute(
                "SELECT grp, last_seq FROM groups WHERE stream = ? ORDER BY grp", (stream,)
            ).fetchall() or [(NO_LISTENER_YET, 0)]
            for group, last_seq in groups:
                # Unread: beyond what the group took, plus taken and not acknowledged.
                count, oldest = conn.execute(
                    """SELECT COUNT(*), MIN(ts) FROM messages m WHERE m.stream = ? AND (
                         m.seq > ? OR m.seq IN (
                           SELECT seq FROM pending p WHERE p.stream = m.stream AND p.grp = ?))""",
                    (stream, last_seq, group),
                ).fetchone()
                age = None if oldest is None else max(0.0, now - oldest)
                found.append(GroupBacklog(stream, group, count, age, dropped.get(group, 0)))
        return found

    # -- settling -----------------------------------------------------------------------

    def ack(self, message: StoredNotification, group: str) -> None:
        with self._acks_lock:
            self._acks.append((group, message.stream, int(message.id)))

    def _write_acks(self, conn) -> None:
        with self._acks_lock:
            acks, self._acks = self._acks, []
        conn.executemany("DELETE FROM pending WHERE grp = ? AND stream = ? AND seq = ?", acks)

    def flush(self) -> None:
        """Write buffered acknowledgements now."""
        if self._acks:
            self._db.transaction(self._write_acks)

    def requeue(self, message: StoredNotification, group: str) -> None:
        self._db.transaction(
            lambda conn: conn.execute(
                "UPDATE pending SET consumer = '', visible_at = 0 "
                "WHERE grp = ? AND stream = ? AND seq = ?",
                (group, message.stream, int(message.id)),
            )
        )

    def close(self) -> None:
        self.flush()
        self._db.close()
