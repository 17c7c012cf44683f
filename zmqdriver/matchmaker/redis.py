"""The Redis matchmaker: ``zmq+redis://[user:password@]host:port[,host2:port2][/db]``.

Each key is a Redis sorted set: member = record, score = the record's expiry
in milliseconds on the *Redis server's* clock (``+inf`` for never), so hosts
with skewed clocks still agree on what is live. Registration and lookup run
as small Lua scripts that read ``TIME`` on the server, which also makes each
of them atomic. The key itself carries a Redis expiry equal to its
longest-lived member, so the sets of servers that died without unregistering
disappear on their own.

Several hosts may be listed: the first reachable one is used until it fails,
then the next one (for a primary and its promoted replicas, say).

``?tls=true`` in the URL (or ``zmq_redis_tls_enabled``) makes every
connection use TLS; see :mod:`zmqdriver.matchmaker.redis_tls`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import TypeVar

import redis
from oslo_messaging import TransportHost
from redis import exceptions as redis_exc
from redis.backoff import NoBackoff
from redis.retry import Retry

from zmqdriver.matchmaker import redis_tls
from zmqdriver.matchmaker.base import MatchMaker, MatchMakerError, MatchMakerUnavailable

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 6379
QUERY_OPTIONS = (redis_tls.QUERY_OPTION,)

T = TypeVar("T")

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


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_db(virtual_host: str | None) -> int:
    if not virtual_host:
        return 0
    try:
        db = int(virtual_host)
    except ValueError:
        db = -1
    if db < 0:
        raise MatchMakerError(
            f"Invalid Redis database {virtual_host!r} in the transport URL path: "
            "expected a database number such as /0"
        )
    return db


def check_query(query: dict[str, str], accepted: tuple[str, ...], kind: str) -> None:
    """Reject query options of the transport URL that are not in ``accepted``."""
    unknown = sorted(set(query) - set(accepted))
    if unknown:
        raise MatchMakerError(
            f"Unknown option(s) {', '.join(unknown)} in the {kind} transport URL; "
            f"accepted: {', '.join(accepted)}"
        )


class _Backend:
    """One Redis host of the URL: its client, scripts and credentials."""

    def __init__(self, transport_host, db: int, timeout: float, tls: dict[str, object]) -> None:
        self.host = transport_host.hostname or DEFAULT_HOST
        self.port = transport_host.port or DEFAULT_PORT
        self.address = _format_address(self.host, self.port)
        # oslo parses ":secret@host" as username "" - that is Redis' default user.
        self.username = transport_host.username or None
        self.password = transport_host.password
        if self.username and self.password is None:
            raise MatchMakerError(
                f"Redis matchmaker at {self.address}: user {self.username!r} given without a "
                "password; write user:password@host, or :password@host for the default user"
            )
        self.tls = bool(tls)
        self.client = redis.Redis(
            host=self.host,
            port=self.port,
            db=db,
            username=self.username,
            password=self.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # One immediate retry replaces a pooled connection that went stale
            # (Redis restarted); anything more is our own failover's job, and
            # timeouts are not retried so a call stays near ``timeout`` per host.
            retry=Retry(NoBackoff(), 1, supported_errors=(redis_exc.ConnectionError,)),
            decode_responses=True,
            **tls,
        )
        self._load_scripts()

    def _load_scripts(self) -> None:
        # Script objects fall back from EVALSHA to loading the script when a
        # restarted server has lost its script cache.
        self.register = self.client.register_script(_REGISTER)
        self.unregister = self.client.register_script(_UNREGISTER)
        self.lookup = self.client.register_script(_LOOKUP)
        self.generation = self.client.register_script(_GENERATION)

    @property
    def user(self) -> str:
        return self.username or "default"


class RedisMatchMaker(MatchMaker):
    """Records in Redis sorted sets, one per key; see the module docstring."""

    def __init__(self, conf, url) -> None:
        super().__init__(conf, url)
        timeout = conf.oslo_messaging_zmq.zmq_matchmaker_timeout
        self.db, self._backends = self._open_backends(url, timeout)
        # Index of the backend that answered last. Reads and writes of an int
        # are atomic, and two threads racing to fail over just pick a host each.
        self._current = 0

    def _open_backends(self, url, timeout: float) -> tuple[int, list[_Backend]]:
        """The database number and the hosts to fail over between, from ``url``.

        A seam for subclasses that reach Redis another way (Sentinel).
        """
        query = dict(url.query or {})
        check_query(query, QUERY_OPTIONS, "Redis")
        tls = redis_tls.connection_kwargs(self.conf, query)
        db = _parse_db(url.virtual_host)
        hosts = list(url.hosts) or [TransportHost(hostname=DEFAULT_HOST)]
        return db, [_Backend(host, db, timeout, tls) for host in hosts]

    def register(self, key: str, record: str, expire: float) -> None:
        # Round up so a tiny positive expire never turns into "never" (0 ms).
        ttl_ms = math.ceil(expire * 1000) if expire > 0 else 0
        self.execute("register", lambda b: b.register(keys=[key], args=[record, ttl_ms]))

    def unregister(self, key: str, record: str) -> None:
        self.execute("unregister", lambda b: b.unregister(keys=[key], args=[record]))

    def lookup(self, key: str) -> list[str]:
        # The set is ordered by expiry; the contract wants records sorted.
        return sorted(self.execute("lookup", lambda b: b.lookup(keys=[key])))

    def generation(self, key: str) -> str | None:
        token = uuid.uuid4().hex
        return self.execute("read the generation", lambda b: b.generation(keys=[key], args=[token]))

    def notification_store(self, retention, redelivery):
        from zmqdriver.notify.redis_store import RedisNotificationStore

        return RedisNotificationStore(self, retention, redelivery)

    def close(self) -> None:
        for backend in self._backends:
            backend.client.close()

    def execute(self, what: str, operation: Callable[[_Backend], T]) -> T:
        """Run ``operation`` on the current backend, failing over to the next ones."""
        failures: list[tuple[_Backend, Exception]] = []
        start = self._current
        for step in range(len(self._backends)):
            index = (start + step) % len(self._backends)
            backend = self._backends[index]
            try:
                result = operation(backend)
            except (redis_exc.AuthenticationError, redis_exc.AuthorizationError) as exc:
                # Before ConnectionError: these subclass it, but another host
                # would not fix a wrong password, and the user must be told.
                raise MatchMakerError(self._auth_message(backend, exc)) from exc
            except (redis_exc.ConnectionError, redis_exc.TimeoutError) as exc:
                reason = redis_tls.rejected_certificate(exc)
                if reason is not None:
                    # Like a wrong password: another host would not fix the CA file.
                    raise MatchMakerError(self._certificate_message(backend, reason)) from exc
                failures.append((backend, exc))
                continue
            except redis_exc.ReadOnlyError as exc:
                # A replica listed in the URL: a later host may be the primary.
                failures.append((backend, exc))
                continue
            except redis_exc.RedisError as exc:
                raise MatchMakerError(self._refused_message(backend, what, exc)) from exc
            self._current = index
            return result
        raise MatchMakerUnavailable(self._unreachable_message(failures))

    def _auth_message(self, backend: _Backend, exc: Exception) -> str:
        if backend.password is None:
            return (
                f"Redis matchmaker at {backend.address} requires authentication ({exc}); "
                "give user:password@ or :password@ in the transport URL"
            )
        return (
            f"Redis matchmaker at {backend.address} rejected the credentials of user "
            f"{backend.user!r}: {exc}"
        )

    @staticmethod
    def _certificate_message(backend: _Backend, reason: str) -> str:
        return (
            f"Redis matchmaker at {backend.address}: the server's TLS certificate was refused "
            f"({reason}); {redis_tls.certificate_fix(reason)}"
        )

    def _refused_message(self, backend: _Backend, what: str, exc: Exception) -> str:
        return (
            f"Redis matchmaker at {backend.address} (db {self.db}, user {backend.user!r}) "
            f"failed to {what}: {exc}"
        )

    @staticmethod
    def _unreachable_message(failures: list[tuple[_Backend, Exception]]) -> str:
        if len(failures) == 1:
            backend, exc = failures[0]
            hint = redis_tls.failure_hint(exc, backend.tls)
            return f"Redis matchmaker at {backend.address} unreachable: {exc}{hint}"
        addresses = ", ".join(backend.address for backend, _ in failures)
        details = "; ".join(
            f"{backend.address}: {exc}{redis_tls.failure_hint(exc, backend.tls)}"
            for backend, exc in failures
        )
        return f"Redis matchmaker at {addresses} unreachable: {details}"
