"""The Redis matchmaker: ``zmq+redis://[user:password@]host:port[,host2:port2][/db]``.

Each key is a Redis sorted set: member = record, score = the record's expiry
in milliseconds on the *Redis server's* clock (``+inf`` for never), so hosts
with skewed clocks still agree on what is live. Registration and lookup run
as small Lua scripts that read ``TIME`` on the server, which also makes each
of them atomic. The key itself carries a Redis expiry equal to its
longest-lived member, so the sets of servers that died without unregistering
disappear on their own.

The connection (several hosts, failover, TLS, credentials, error messages)
is :class:`zmqdriver.backends.redis.RedisBackend`, shared with the
notification store.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable

from oslo_config import cfg
from oslo_messaging import TransportURL
from redis import exceptions as redis_exc
from redis.client import PubSub

from zmqdriver.backends.redis import RedisBackend, glob_escape
from zmqdriver.matchmaker.base import ListedRecord, MatchMaker
from zmqdriver.matchmaker.watch import FollowedWatch
from zmqdriver.options import GROUP

LOG = logging.getLogger(__name__)

# A subscription silent this long is pinged (a quiet one is normal: changes are rare).
PING_AFTER = 30.0
# How long one read waits, so the watch's thread sees stop() that soon.
READ_FOR = 0.5

# Shared head of every script: ``now`` in ms on the server's clock.
# replicate_commands() lets Redis < 5 accept writes after TIME; it is a no-op
# on newer servers, which always replicate a script's effects.
_NOW = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function expire_key(key)
    -- The key lives as long as its longest-lived member.
    local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    if top[2] == nil then return end
    if top[2] == 'inf' then
        redis.call('PERSIST', key)
    else
        redis.call('PEXPIREAT', key, top[2])
    end
end
-- 1, or why the notice was refused (an ACL user without the channel): the
-- record is written either way, and clients that cannot subscribe poll.
local function publish(channel, key)
    local sent = redis.pcall('PUBLISH', channel, key)
    if type(sent) == 'table' and sent.err then return sent.err end
    return 1
end
"""

# KEYS[1] = key, ARGV[1] = record, ARGV[2] = time to live in ms (0 = never),
# ARGV[3] = the changes channel. A refresh publishes nothing; a record that is
# new, or back after it expired, is a change, and so are expired ones purged.
_REGISTER = (
    _NOW
    + """
local ttl = tonumber(ARGV[2])
local score = 'inf'
if ttl > 0 then score = now + ttl end
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
local changed = not old or (old ~= 'inf' and tonumber(old) <= now)
redis.call('ZADD', KEYS[1], score, ARGV[1])
-- Purge here too, so keys that are never looked up stay small.
if redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) > 0 then changed = true end
expire_key(KEYS[1])
if changed then return publish(ARGV[3], KEYS[1]) end
return 1
"""
)

# KEYS[1] = key, ARGV[1] = record, ARGV[2] = the changes channel.
_UNREGISTER = (
    _NOW
    + """
local changed = redis.call('ZREM', KEYS[1], ARGV[1]) > 0
if redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) > 0 then changed = true end
-- The removed record may have been the longest-lived one.
expire_key(KEYS[1])
if changed then return publish(ARGV[2], KEYS[1]) end
return 1
"""
)

# KEYS[1] = marker key, ARGV[1] = a fresh random token. A restarted (empty)
# Redis has no marker: the first caller sets a new one, and every server sees
# the token change.
_GENERATION = """
local token = redis.call('GET', KEYS[1])
if not token then
    token = ARGV[1]
    redis.call('SET', KEYS[1], token)
end
return token
"""

# KEYS[1] = key. A record is live while its score is greater than now.
_LOOKUP = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
)


# KEYS[1] = key. Returns {now_ms, member1, score1, ...} of the live members.
_LIST = (
    _NOW
    + """
local out = {tostring(now)}
for _, item in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')) do
    table.insert(out, item)
end
return out
"""
)


def changes_channel(prefix: str) -> str:
    """The channel our scripts publish changed keys on, for ``zmq_matchmaker_prefix``.

    >>> changes_channel("zmqdriver")
    'zmqdriver/changes'
    """
    return f"{prefix}/changes"


def first_expiry(records: list[ListedRecord]) -> float | None:
    """Seconds until the first of ``records`` expires; None if none of them ever does.

    >>> first_expiry([ListedRecord("k", "a", 9.5), ListedRecord("k", "b", None),
    ...               ListedRecord("k", "c", 2.0)])
    2.0
    >>> first_expiry([ListedRecord("k", "b", None)]) is None
    True
    """
    return min((item.expires_in for item in records if item.expires_in is not None), default=None)


def listed(key: str, reply: list) -> list[ListedRecord]:
    """The records of one ``_LIST`` reply, expiry in seconds from Redis's now.

    >>> listed("k", ["1000", "r1", "3000", "r2", "inf"])
    [ListedRecord(key='k', record='r1', expires_in=2.0), \
ListedRecord(key='k', record='r2', expires_in=None)]
    """
    now = float(reply[0])
    pairs = zip(reply[1::2], reply[2::2], strict=True)
    return [
        ListedRecord(key, member, None if score == "inf" else (float(score) - now) / 1000)
        for member, score in sorted(pairs)
    ]


class RedisMatchMaker(MatchMaker):
    """Records in Redis sorted sets, one per key; see the module docstring."""

    # How the connection is made from the URL (Sentinel makes it another way).
    backend_class: type[RedisBackend] = RedisBackend

    def __init__(self, conf: cfg.ConfigOpts, url: TransportURL) -> None:
        super().__init__(conf, url)
        self.backend: RedisBackend = self.backend_class.from_url(conf, url)
        self._register = self.backend.script(_REGISTER)
        self._unregister = self.backend.script(_UNREGISTER)
        self._lookup = self.backend.script(_LOOKUP)
        self._generation = self.backend.script(_GENERATION)
        self._list = self.backend.script(_LIST)
        self._channel = changes_channel(conf[GROUP].zmq_matchmaker_prefix)
        self._timeout = conf[GROUP].zmq_matchmaker_timeout
        self._publish_refused = False  # warned once

    def register(self, key: str, record: str, expire: float) -> None:
        # Round up so a tiny positive expire never turns into "never" (0 ms).
        ttl_ms = math.ceil(expire * 1000) if expire > 0 else 0
        self._published(
            self.backend.execute(
                "register",
                lambda c: self._register(
                    keys=[key], args=[record, ttl_ms, self._channel], client=c
                ),
            )
        )

    def unregister(self, key: str, record: str) -> None:
        self._published(
            self.backend.execute(
                "unregister",
                lambda c: self._unregister(keys=[key], args=[record, self._channel], client=c),
            )
        )

    def _published(self, reply: int | str) -> None:
        """Warn once when Redis refused our change notices: subscribed clients miss them."""
        if reply == 1 or self._publish_refused:
            return
        self._publish_refused = True
        LOG.warning(
            "%s refused to publish changes on %s (%s); clients subscribed to it see "
            "servers come and go only as records expire: allow the channel to this user "
            "(&%s), or set zmq_matchmaker_watch = false everywhere",
            self.backend.label,
            self._channel,
            reply,
            self._channel,
        )

    def lookup(self, key: str) -> list[str]:
        # The set is ordered by expiry; the contract wants records sorted.
        return sorted(self.backend.execute("lookup", lambda c: self._lookup(keys=[key], client=c)))

    def lookup_with_expiry(self, key: str) -> tuple[list[str], float | None]:
        # Read-only: expired records are left to the next register or unregister to purge.
        found = listed(
            key, self.backend.execute("lookup", lambda c: self._list(keys=[key], client=c))
        )
        return [item.record for item in found], first_expiry(found)

    def watch(self, prefix: str, on_change: Callable[[str | None], None]) -> RedisWatch:
        watch = RedisWatch(self.backend, self._channel, self._timeout, prefix, on_change)
        watch.start()
        return watch

    def records(self, prefix: str) -> list[ListedRecord]:
        def scan(client) -> list[ListedRecord]:
            keys = client.scan_iter(match=glob_escape(prefix) + "*", _type="zset", count=500)
            found = []
            for key in sorted(set(keys)):
                found += listed(key, self._list(keys=[key], client=client))
            return found

        return self.backend.execute("list records", scan)

    def generation(self, key: str) -> str | None:
        token = uuid.uuid4().hex
        return self.backend.execute(
            "read the generation", lambda c: self._generation(keys=[key], args=[token], client=c)
        )

    def close(self) -> None:
        self.backend.close()


class RedisWatch(FollowedWatch):
    """The changes under a prefix, as our scripts publish them on the changes channel.

    One pub/sub connection (on the host the backend uses, the master with
    Sentinel) read by a thread of its own. Redis does not keep messages for a
    subscriber that is away, so each (re)subscription is a resync: redis-py
    subscribes again by itself on a new connection after a dropped one, and
    its confirmation makes clients read their keys again once. A connection
    silent for PING_AFTER seconds is pinged, and closed when no answer comes
    within the matchmaker's timeout: a dead peer must not pass for "up".
    """

    def __init__(
        self,
        backend: RedisBackend,
        channel: str,
        timeout: float,
        prefix: str,
        on_change: Callable[[str | None], None],
    ) -> None:
        super().__init__(backend.label, prefix, on_change, "zmqdriver-redis-watch")
        self._backend = backend
        self._channel = channel
        self._timeout = timeout

    def _follow(self) -> None:
        pubsub = self._backend.subscribe(self._channel, self._timeout)
        try:
            self._came_up()
            self._pass_on(pubsub)
        finally:
            pubsub.close()

    def _pass_on(self, pubsub: PubSub) -> None:
        heard = time.monotonic()
        pinged = False
        while not self._stopped.is_set():
            message = pubsub.get_message(timeout=READ_FOR)
            if message is not None:
                heard, pinged = time.monotonic(), False
                self._take(message)
            else:
                pinged = self._ping_if_silent(pubsub, time.monotonic() - heard, pinged)

    def _ping_if_silent(self, pubsub: PubSub, silent: float, pinged: bool) -> bool:
        """Ping a connection silent for PING_AFTER s; raise if the ping is not answered."""
        if silent > PING_AFTER + self._timeout:
            raise redis_exc.TimeoutError(f"no answer to a PING in {self._timeout:.0f}s")
        if silent > PING_AFTER and not pinged:
            pubsub.ping()
            return True
        return pinged

    def _take(self, message: dict) -> None:
        if message["type"] == "subscribe":
            self._came_up()  # subscribed again on a new connection: messages were missed
        elif message["type"] == "message" and message["data"].startswith(self.prefix):
            self._changed(message["data"])
