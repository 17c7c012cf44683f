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

import math
import uuid

from oslo_config import cfg
from oslo_messaging import TransportURL

from zmqdriver.backends.redis import RedisBackend, glob_escape
from zmqdriver.matchmaker.base import ListedRecord, MatchMaker

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
"""

# KEYS[1] = key, ARGV[1] = record, ARGV[2] = time to live in ms (0 = never).
_REGISTER = (
    _NOW
    + """
local ttl = tonumber(ARGV[2])
local score = 'inf'
if ttl > 0 then score = now + ttl end
redis.call('ZADD', KEYS[1], score, ARGV[1])
-- Purge here too, so keys that are never looked up stay small.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
expire_key(KEYS[1])
return 1
"""
)

# KEYS[1] = key, ARGV[1] = record.
_UNREGISTER = (
    _NOW
    + """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
-- The removed record may have been the longest-lived one.
expire_key(KEYS[1])
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

    def register(self, key: str, record: str, expire: float) -> None:
        # Round up so a tiny positive expire never turns into "never" (0 ms).
        ttl_ms = math.ceil(expire * 1000) if expire > 0 else 0
        self.backend.execute(
            "register", lambda c: self._register(keys=[key], args=[record, ttl_ms], client=c)
        )

    def unregister(self, key: str, record: str) -> None:
        self.backend.execute(
            "unregister", lambda c: self._unregister(keys=[key], args=[record], client=c)
        )

    def lookup(self, key: str) -> list[str]:
        # The set is ordered by expiry; the contract wants records sorted.
        return sorted(self.backend.execute("lookup", lambda c: self._lookup(keys=[key], client=c)))

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
