"""Notifications in Redis Streams: one stream per topic, one consumer group per pool.

Redis Streams implement the store contract directly: XADD appends,
XREADGROUP delivers each message once per group, XACK settles it, and
XAUTOCLAIM hands messages whose listener died (or that were requeued) to
another listener of the group. An append is one XADD; when retention is due
(``RetentionSchedule``) it is a Lua script instead that also enforces
retention and counts, per group, the unread messages it dropped. Appends go
on held connections (``HeldConnections``): one command per notification.
Reads and acknowledgements do too, and the listener shapes XREADGROUP's reply
itself (``stored_entries``). Payloads are JSON text. Requests go through the
Redis backend the matchmaker uses too (several hosts, failover, clear errors).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import redis
from redis import exceptions as redis_exc

from zmqdriver import metrics
from zmqdriver.backends.redis import HeldConnections, RedisBackend, glob_escape
from zmqdriver.notify.store import (
    NO_LISTENER_YET,
    GroupBacklog,
    NotificationStore,
    Retention,
    StoredNotification,
)

# KEYS[1] = stream, KEYS[2] = its drop counts (a hash: group -> total, for
# zmqdriver-status); ARGV = payload, max_count, max_age_ms, name for "no group yet".
# Returns {group1, dropped1, group2, dropped2, ...} for groups that lost unread messages.
_APPEND = """
local function parse(id)
    local ms, seq = string.match(id, '^(%d+)-(%d+)$')
    return tonumber(ms), tonumber(seq)
end
local function newer(a, b)  -- is stream id a > b ?
    local am, as = parse(a)
    local bm, bs = parse(b)
    return am > bm or (am == bm and as > bs)
end

redis.call('XADD', KEYS[1], '*', 'p', ARGV[1])
local max_count, max_age = tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local min_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - max_age

local excess = redis.call('XLEN', KEYS[1]) - max_count
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if excess <= 0 and parse(oldest[1][1]) >= min_ms then
    return {}
end
-- Victims: the oldest entries beyond max_count, plus any older than max_age.
local victims = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', math.max(excess, 0) + 100)
local last = nil
for i, entry in ipairs(victims) do
    if i <= excess or parse(entry[1]) < min_ms then last = entry[1] else break end
end
if last == nil then return {} end

local dropped = {}
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then
    local count = 0
    for _, entry in ipairs(victims) do
        count = count + 1
        if entry[1] == last then break end
    end
    dropped = {ARGV[4], count}
    redis.call('HINCRBY', KEYS[2], ARGV[4], count)
end
for _, info in ipairs(groups) do
    local name, delivered
    for j = 1, #info, 2 do
        if info[j] == 'name' then name = info[j + 1] end
        if info[j] == 'last-delivered-id' then delivered = info[j + 1] end
    end
    local unread = 0
    for _, entry in ipairs(victims) do
        if newer(entry[1], delivered) then unread = unread + 1 end
        if entry[1] == last then break end
    end
    if unread > 0 then
        table.insert(dropped, name)
        table.insert(dropped, unread)
        redis.call('HINCRBY', KEYS[2], name, unread)
        redis.call('XGROUP', 'SETID', KEYS[1], name, last)
    end
end
local ms, seq = parse(last)
redis.call('XTRIM', KEYS[1], 'MINID', ms .. '-' .. (seq + 1))
return dropped
"""

# The hash beside each stream that counts what retention dropped, per group.
DROPPED_SUFFIX = "#dropped"

# Longest block of one XREADGROUP: below the socket timeout, and short enough
# that a stopping listener is not kept waiting.
_BLOCK_SLICE = 0.25

# A listener takes up to this many new messages per read (its listener keeps
# the surplus): one round trip per message would cap a listener's rate.
_PREFETCH = 16

# A listener that has caught up would read, and acknowledge, about one message per round
# trip: after a read that found less than a prefetch it waits this long before the next,
# so a burst gathers (notifications wait at most this much longer).
_READ_PACE = 0.002

# A scan of a group's pending entries that reached their end starts over no
# sooner than this: redelivery is not urgent, and a scan costs a round trip.
_CLAIM_EVERY = 1.0
# XAUTOCLAIM's cursor when a scan starts, and when it has reached the end.
_SCAN_START = "0-0"


def pause_before_read(caught_up_at: float, now: float, pace: float) -> float:
    """Seconds to wait before the next read: ``pace`` after the last one that caught up.

    >>> round(pause_before_read(caught_up_at=10.0, now=10.0005, pace=0.002), 6)
    0.0015
    >>> pause_before_read(caught_up_at=10.0, now=10.5, pace=0.002)  # a while ago: read now
    0.0
    """
    return max(0.0, caught_up_at + pace - now)


@dataclass
class _ClaimScan:
    """Where the next XAUTOCLAIM of one (stream, group) starts, and not before when."""

    cursor: str = _SCAN_START
    not_before: float = 0.0  # time.monotonic()


class RedisNotificationStore(NotificationStore):
    def __init__(self, backend: RedisBackend, retention: Retention, redelivery: float) -> None:
        super().__init__(retention, redelivery)
        self._backend = backend
        self._append_sha = backend.script(_APPEND).sha
        self._held = HeldConnections()  # for appends: one command per notification
        self._scans: dict[tuple[str, str], _ClaimScan] = {}
        # Acknowledgements go out in batches before the next read (a crash
        # loses only acks: those messages are delivered again).
        self._acks: dict[tuple[str, str], list[str]] = {}
        self._acks_lock = threading.Lock()
        self._caught_up_at: dict[tuple[str, str], float] = {}  # last read short of a prefetch

    def append(self, stream: str, payload: str) -> dict[str, int]:
        if not self.retention_schedule.due(stream):
            self._backend.execute(
                "store a notification",
                lambda client: self._held.command(client, "XADD", stream, "*", "p", payload),
            )
            return {}
        keys_and_args = (
            2,
            stream,
            stream + DROPPED_SUFFIX,
            payload,
            self.retention.max_count,
            math.ceil(self.retention.max_age * 1000),
            NO_LISTENER_YET,
        )
        result = self._backend.execute(
            "store a notification", lambda client: self._append_enforcing(client, keys_and_args)
        )
        return {result[i]: int(result[i + 1]) for i in range(0, len(result), 2)}

    def _append_enforcing(self, client: redis.Redis, keys_and_args: tuple) -> list:
        """The append script: XADD, then retention (see _APPEND)."""
        try:
            return self._held.command(client, "EVALSHA", self._append_sha, *keys_and_args)
        except redis_exc.NoScriptError:
            # A restarted (or another) Redis lost its script cache: EVAL sends
            # the script itself, and Redis keeps it for the next EVALSHA.
            return self._held.command(client, "EVAL", _APPEND, *keys_and_args)

    def subscribe(self, streams: list[str], group: str, consumer: str) -> None:
        # Redis adds the consumer on its first XREADGROUP.
        for stream in streams:
            self._backend.execute(
                "create a notification group", lambda c, s=stream: self._create_group(c, s, group)
            )

    @staticmethod
    def _create_group(client: redis.Redis, stream: str, group: str) -> None:
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis_exc.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(
        self, streams: list[str], group: str, consumer: str, count: int, timeout: float
    ) -> list[StoredNotification]:
        self.flush()
        messages = self._claim_due(streams, group, consumer, count)
        deadline = time.monotonic() + timeout
        while not messages:
            self._pace(group, consumer)
            remaining = deadline - time.monotonic()
            block_ms = max(1, int(min(remaining, _BLOCK_SLICE) * 1000))
            messages = self._read_new(streams, group, consumer, max(count, _PREFETCH), block_ms)
            if len(messages) < max(count, _PREFETCH):
                self._caught_up_at[(group, consumer)] = time.monotonic()
            if messages or remaining <= _BLOCK_SLICE:
                break
            self.flush()
        return messages

    def _pace(self, group: str, consumer: str) -> None:
        """After a read that found less than a prefetch, let the next batch gather a moment."""
        caught_up_at = self._caught_up_at.get((group, consumer), -math.inf)
        pause = pause_before_read(caught_up_at, time.monotonic(), _READ_PACE)
        if pause:
            time.sleep(pause)

    def _read_new(self, streams, group, consumer, count, block_ms) -> list[StoredNotification]:
        command = ("XREADGROUP", "GROUP", group, consumer, "COUNT", count, "BLOCK", block_ms)
        command += ("STREAMS", *streams, *[">"] * len(streams))

        def xreadgroup(client: redis.Redis):
            try:
                return self._held.command(client, *command)
            except redis_exc.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # Redis restarted empty: recreate the groups and read next time.
                for stream in streams:
                    self._create_group(client, stream, group)
                return None

        return stored_entries(self._backend.execute("read notifications", xreadgroup))

    def _claim_due(self, streams, group, consumer, count) -> list[StoredNotification]:
        """Messages requeued, or pending longer than ``redelivery`` (their listener died).

        Up to a prefetch's worth, like new messages. Each stream's pending entries
        are scanned a batch at a time with XAUTOCLAIM's cursor, and a scan that has
        not reached their end goes on at the next read: a dead listener's backlog
        moves as fast as reads do, and entries still in use at the front of the
        pending list do not hide the due ones behind them. A finished scan starts
        over after ``_CLAIM_EVERY``.
        """
        now = time.monotonic()
        claimed: list[StoredNotification] = []
        idle_ms = math.ceil(self.redelivery * 1000)
        want = max(count, _PREFETCH)
        for stream in streams:
            scan = self._scans.setdefault((stream, group), _ClaimScan())
            if now < scan.not_before or len(claimed) >= want:
                continue
            start, n = scan.cursor, want - len(claimed)
            reply = self._backend.execute(
                "claim notifications",
                lambda c, s=stream, a=start, n=n: self._autoclaim(
                    c, s, group, consumer, idle_ms, a, n
                ),
            )
            scan.cursor, entries = (reply[0], reply[1]) if reply else (_SCAN_START, [])
            if scan.cursor == _SCAN_START:
                scan.not_before = now + _CLAIM_EVERY
            metrics.incr("notifications_redelivered", len(entries))
            claimed += [
                StoredNotification(stream, entry_id, fields.get("p", ""))
                for entry_id, fields in entries
                if fields is not None
            ]
        return claimed

    @staticmethod
    def _autoclaim(client: redis.Redis, stream, group, consumer, idle_ms, start, count):
        try:
            return client.xautoclaim(stream, group, consumer, idle_ms, start, count=count)
        except redis_exc.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return None  # Redis restarted empty: the next read recreates the group

    def ack(self, message: StoredNotification, group: str) -> None:
        with self._acks_lock:
            self._acks.setdefault((message.stream, group), []).append(message.id)

    def flush(self) -> None:
        """Send buffered acknowledgements now (one XACK per stream and group)."""
        with self._acks_lock:
            acks, self._acks = self._acks, {}
        for (stream, group), ids in acks.items():
            command = ("XACK", stream, group, *ids)
            self._backend.execute(
                "acknowledge notifications",
                lambda client, c=command: self._held.command(client, *c),
            )

    def unsubscribe(self, streams: list[str], group: str, consumer: str) -> None:
        self.flush()

    def close(self) -> None:
        self.flush()
        self._held.close()

    def backlogs(self, prefix: str) -> list[GroupBacklog]:
        return self._backend.execute("list notification streams", lambda c: _backlogs(c, prefix))

    def requeue(self, message: StoredNotification, group: str) -> None:
        # Make the entry look idle for longer than ``redelivery`` so the next
        # XAUTOCLAIM of any listener of the group takes it.
        idle_ms = math.ceil(self.redelivery * 1000) + 1
        self._backend.execute(
            "requeue a notification",
            lambda client: client.xclaim(
                message.stream, group, "requeued", 0, [message.id], idle=idle_ms, justid=True
            ),
        )
        self._scans.pop((message.stream, group), None)  # the next read scans from the start


def stored_entries(reply: object) -> list[StoredNotification]:
    """The notifications in an XREADGROUP reply as Redis sends it (RESP2 or RESP3).

    RESP2 lists ``[stream, entries]`` pairs, RESP3 maps streams to entries;
    an entry is ``[id, [field, value, ...]]``, and nothing new is a null.

    >>> entries = [["1-0", ["p", "{}"]], ["1-1", ["p", "[]"]]]
    >>> stored_entries([["s", entries]]) == stored_entries({"s": entries})
    True
    >>> [(n.stream, n.id, n.payload) for n in stored_entries({"s": entries})]
    [('s', '1-0', '{}'), ('s', '1-1', '[]')]
    >>> stored_entries(None)
    []
    """
    streams = reply.items() if isinstance(reply, dict) else reply or []
    return [
        StoredNotification(stream, entry_id, _field(fields, "p"))
        for stream, entries in streams
        for entry_id, fields in entries
    ]


def _field(fields: list, name: str) -> str:
    """The value of ``name`` in a flat ``[field, value, ...]`` list ('' if absent).

    >>> _field(["a", "1", "p", "2"], "p"), _field([], "p")
    ('2', '')
    """
    for index in range(0, len(fields) - 1, 2):
        if fields[index] == name:
            return fields[index + 1]
    return ""


def _backlogs(client: redis.Redis, prefix: str) -> list[GroupBacklog]:
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    streams = client.scan_iter(match=glob_escape(prefix) + "*", _type="stream", count=500)
    found = []
    for stream in sorted(set(streams)):
        drops = client.hgetall(stream + DROPPED_SUFFIX)
        dropped = {group: int(count) for group, count in drops.items()}
        groups = client.xinfo_groups(stream)
        if not groups:
            first = client.xrange(stream, count=1)
            oldest = _age(now_ms, first[0][0]) if first else None
            waiting = client.xlen(stream)
            found.append(
                GroupBacklog(
                    stream, NO_LISTENER_YET, waiting, oldest, dropped.get(NO_LISTENER_YET, 0)
                )
            )
        for info in sorted(groups, key=lambda g: g["name"]):
            found.append(_group_backlog(client, stream, info, now_ms, dropped))
    return found


def _group_backlog(client, stream: str, info: dict, now_ms: int, dropped: dict) -> GroupBacklog:
    group, last = info["name"], info["last-delivered-id"]
    unread = client.xrange(stream, f"({last}", "+", count=1)
    lag = info.get("lag")
    if lag is None:  # Redis before 7, or a lag Redis cannot tell after deletions
        lag = len(client.xrange(stream, f"({last}", "+"))
    pending = client.xpending(stream, group)
    first_unread = unread[0][0] if unread else None
    ids = [entry_id for entry_id in (pending.get("min"), first_unread) if entry_id]
    oldest = min((_age(now_ms, entry_id) for entry_id in ids), default=None)
    backlog = int(lag) + int(info["pending"])
    return GroupBacklog(stream, group, backlog, oldest, dropped.get(group, 0))


def _age(now_ms: int, entry_id: str) -> float:
    """Seconds since a stream entry was added (its id starts with Redis's time in ms).

    >>> _age(5000, "3000-0")
    2.0
    """
    return max(0.0, (now_ms - int(entry_id.split("-")[0])) / 1000)
