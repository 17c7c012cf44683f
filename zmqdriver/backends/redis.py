"""The connection to Redis: ``zmq+redis://[user:password@]host:port[,host2:port2][/db]``.

Discovery (the Redis matchmaker) and the notification store (Redis Streams)
are two users of one ``RedisBackend``: the same pools, credentials and TLS,
and the same explanation of failures. Users hand ``execute`` an operation on
a ``redis.Redis`` client; the backend runs it on the current host and turns
redis-py's errors into :class:`BackendError` (retrying will not help: a
wrong password, an untrusted certificate) or :class:`BackendUnavailable`
(an outage).

Several hosts may be listed: the first reachable one is used until it fails,
then the next one (for a primary and its promoted replicas, say).

``?tls=true`` in the URL (or ``zmq_redis_tls_enabled``) makes every
connection use TLS; see :mod:`zmqdriver.backends.redis_tls`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import redis
from oslo_config import cfg
from oslo_messaging import TransportHost, TransportURL
from redis import exceptions as redis_exc
from redis.backoff import NoBackoff
from redis.client import PubSub
from redis.commands.core import Script
from redis.connection import AbstractConnection
from redis.retry import Retry

from zmqdriver.backends import redis_tls
from zmqdriver.exceptions import BackendError, BackendUnavailable
from zmqdriver.options import GROUP

LOG = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 6379
QUERY_OPTIONS = (redis_tls.QUERY_OPTION,)
# How errors name us. Operators know the Redis connection by this name from
# the matchmaker's messages; the notification store shares the connection.
LABEL = "Redis matchmaker"

T = TypeVar("T")


def format_address(host: str, port: int) -> str:
    """``host:port``, with IPv6 addresses in brackets.

    >>> format_address("10.0.0.1", 6379)
    '10.0.0.1:6379'
    >>> format_address("::1", 6379)
    '[::1]:6379'
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_db(virtual_host: str | None) -> int:
    """The database number of the URL's path (0 when absent).

    >>> parse_db(None), parse_db("3")
    (0, 3)
    """
    if not virtual_host:
        return 0
    try:
        db = int(virtual_host)
    except ValueError:
        db = -1
    if db < 0:
        raise BackendError(
            f"Invalid Redis database {virtual_host!r} in the transport URL path: "
            "expected a database number such as /0"
        )
    return db


def check_query(query: dict[str, str], accepted: tuple[str, ...], kind: str) -> None:
    """Reject query options of the transport URL that are not in ``accepted``."""
    unknown = sorted(set(query) - set(accepted))
    if unknown:
        raise BackendError(
            f"Unknown option(s) {', '.join(unknown)} in the {kind} transport URL; "
            f"accepted: {', '.join(accepted)}"
        )


def stale_connection_retry() -> Retry:
    """redis-py's retry for our clients.

    One immediate retry replaces a pooled connection that went stale (Redis
    restarted); anything more is the backend's failover's job, and timeouts
    are not retried so a call stays near ``timeout`` per host.
    """
    return Retry(NoBackoff(), 1, supported_errors=(redis_exc.ConnectionError,))


class HeldConnections:
    """Connections kept out of a client's pool, for a command sent very often.

    ``client.execute_command`` takes a pooled connection, checks it for unread
    data (a ``poll``), runs its retry and observability hooks and gives it
    back: as much CPU as the command's own round trip (doc/benchmarks.md). A
    notifier sends one command per notification, so it keeps connections:
    a calling thread takes an idle one (or a new one from the pool) and puts
    it back. Commands are packed by ``pack_command``, in one piece (redis-py's
    packer encodes argument by argument: 6 µs a command against 0.5). Replies
    and errors are redis-py's, so ``RedisBackend.execute`` explains them and
    fails over as for any operation.
    """

    def __init__(self) -> None:
        self._idle: dict[redis.Redis, list[AbstractConnection]] = {}
        self._pid = os.getpid()

    def command(self, client: redis.Redis, *args: object) -> object:
        """Send one command on a held connection of ``client``; its parsed reply."""
        packed = pack_command(*args)
        idle = self._idle_of(client)
        try:
            conn = idle.pop()
        except IndexError:
            conn = client.connection_pool.get_connection()
        try:
            return _round_trip(conn, packed)
        except redis_exc.ConnectionError:
            # A connection that went stale (Redis restarted): one fresh try, as
            # stale_connection_retry does for pooled ones.
            conn.disconnect()
            return _round_trip(conn, packed)
        finally:
            idle.append(conn)

    def close(self) -> None:
        """Close the connections held now (a pool a client did not make outlives it)."""
        idle, self._idle = self._idle, {}
        if self._pid == os.getpid():
            for conn in (conn for conns in idle.values() for conn in conns):
                conn.disconnect()

    def _idle_of(self, client: redis.Redis) -> list[AbstractConnection]:
        if self._pid != os.getpid():
            # Forked: the parent's sockets are not ours to use (nor to close).
            self._idle, self._pid = {}, os.getpid()
        return self._idle.setdefault(client, [])


def pack_command(*args: str | bytes | int) -> bytes:
    """A Redis command in RESP, as one bytes object (strings in UTF-8).

    >>> pack_command("XADD", "s", "*", "p", "{}")
    b'*5\\r\\n$4\\r\\nXADD\\r\\n$1\\r\\ns\\r\\n$1\\r\\n*\\r\\n$1\\r\\np\\r\\n$2\\r\\n{}\\r\\n'
    >>> pack_command("GET", 7) == b"*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\n7\\r\\n"
    True
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _round_trip(conn: AbstractConnection, packed: bytes) -> object:
    try:
        conn.send_packed_command([packed])
        return conn.read_response()
    except redis_exc.ResponseError:
        raise  # Redis answered: the connection is in step
    except BaseException:
        # Half sent or half read: the next use must start on a new socket.
        conn.disconnect()
        raise


@dataclass(frozen=True)
class Credentials:
    username: str | None
    password: str | None = field(repr=False)  # never in logs or tracebacks

    @property
    def user(self) -> str:
        """The user as Redis names it (no username is Redis' ``default`` user)."""
        return self.username or "default"


@dataclass(frozen=True)
class RedisHost:
    """One way to a Redis server: its client, and what error messages say about it."""

    client: redis.Redis
    address: str
    credentials: Credentials
    tls: bool


def host_from_url(
    transport_host: TransportHost, db: int, timeout: float, tls: dict[str, object]
) -> RedisHost:
    """A client for one host of the transport URL."""
    host = transport_host.hostname or DEFAULT_HOST
    port = transport_host.port or DEFAULT_PORT
    address = format_address(host, port)
    # oslo parses ":secret@host" as username "" - that is Redis' default user.
    credentials = Credentials(transport_host.username or None, transport_host.password)
    if credentials.username and credentials.password is None:
        raise BackendError(
            f"{LABEL} at {address}: user {credentials.username!r} given without a "
            "password; write user:password@host, or :password@host for the default user"
        )
    client = redis.Redis(
        host=host,
        port=port,
        db=db,
        username=credentials.username,
        password=credentials.password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=stale_connection_retry(),
        decode_responses=True,
        **tls,
    )
    return RedisHost(client, address, credentials, bool(tls))


class Health:
    """What operators are told about a backend's connection: each change once.

    ``answered(where)`` after every success, ``failed(why)`` after an outage;
    a line is logged only when the state changes (first connection, another
    host answering, an outage starting or ending), so a busy process that
    asks Redis thousands of times a second logs nothing while all is well.
    Thread-safe; the common case (same host, no outage) takes no lock.
    """

    def __init__(
        self,
        label: str,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger = LOG,
    ) -> None:
        """``log``: the logger operators know the backend by (this module's by default)."""
        self._label = label
        self._clock = clock
        self._log = log
        self._lock = threading.Lock()
        self._where: str | None = None  # who answered last
        self._down_since: float | None = None  # when the current outage began

    def answered(self, where: str) -> None:
        if where == self._where and self._down_since is None:
            return
        with self._lock:
            previous, down_since = self._where, self._down_since
            self._where, self._down_since = where, None
        outage = (
            "" if down_since is None else f" after {self._clock() - down_since:.0f}s unreachable"
        )
        if previous is None:
            self._log.info("%s: connected to %s%s", self._label, where, outage)
        elif previous != where:
            self._log.info("%s: failed over from %s to %s%s", self._label, previous, where, outage)
        elif down_since is not None:
            self._log.info("%s: %s is back%s", self._label, where, outage)

    def failed(self, why: str) -> None:
        if self._down_since is not None:
            return
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = self._clock()
        # Users of the backend retry and say so themselves; this marks where it began.
        self._log.warning("%s: unreachable, retrying until it answers: %s", self._label, why)


class RedisBackend:
    """The hosts of one Redis deployment, used in turn; see the module docstring."""

    def __init__(self, hosts: list[RedisHost], db: int) -> None:
        self.hosts = hosts
        self.db = db
        # Index of the host that answered last. Reads and writes of an int
        # are atomic, and two threads racing to fail over just pick a host each.
        self._current = 0
        self.label = LABEL
        self.health = Health(LABEL)

    @classmethod
    def from_url(cls, conf: cfg.ConfigOpts, url: TransportURL) -> RedisBackend:
        """The backend a ``zmq+redis://`` URL names; configuration errors raise now."""
        query = dict(url.query or {})
        check_query(query, QUERY_OPTIONS, "Redis")
        tls = redis_tls.connection_kwargs(conf, query)
        db = parse_db(url.virtual_host)
        timeout = conf[GROUP].zmq_matchmaker_timeout
        hosts = list(url.hosts) or [TransportHost(hostname=DEFAULT_HOST)]
        return cls([host_from_url(host, db, timeout, tls) for host in hosts], db)

    def script(self, lua: str) -> Script:
        """A Lua script to call as ``script(keys=..., args=..., client=client)`` in execute.

        redis-py falls back from EVALSHA to loading the script when a server
        (another host, or a restarted one) does not have it cached.
        """
        return self.hosts[0].client.register_script(lua)

    def execute(self, what: str, operation: Callable[[redis.Redis], T]) -> T:
        """``operation(client)`` on the current host, failing over to the next ones.

        ``what`` names the operation in error messages ("failed to {what}").
        """
        failures: list[tuple[RedisHost, Exception]] = []
        start = self._current
        for step in range(len(self.hosts)):
            index = (start + step) % len(self.hosts)
            host = self.hosts[index]
            try:
                result = operation(host.client)
            except (redis_exc.AuthenticationError, redis_exc.AuthorizationError) as exc:
                # Before ConnectionError: these subclass it, but another host
                # would not fix a wrong password, and the user must be told.
                raise BackendError(self._auth_message(host, exc)) from exc
            except (redis_exc.ConnectionError, redis_exc.TimeoutError) as exc:
                reason = redis_tls.rejected_certificate(exc)
                if reason is not None:
                    # Like a wrong password: another host would not fix the CA file.
                    raise BackendError(self._certificate_message(host, reason)) from exc
                failures.append((host, exc))
                continue
            except redis_exc.ReadOnlyError as exc:
                # A replica listed in the URL: a later host may be the primary.
                failures.append((host, exc))
                continue
            except redis_exc.RedisError as exc:
                raise BackendError(self._refused_message(host, what, exc)) from exc
            self._current = index
            self.health.answered(self._answered_by(host))
            return result
        error = BackendUnavailable(self._unreachable_message(failures))
        self.health.failed(str(error))
        raise error

    def subscribe(self, channel: str, timeout: float) -> PubSub:
        """A pub/sub connection of its own, subscribed to ``channel`` on the current host.

        Fails over like ``execute``; returns once Redis confirmed the
        subscription, so every message published from then on is received.
        """
        return self.execute(
            f"subscribe to {channel}", lambda client: _subscribed(client, channel, timeout)
        )

    def _answered_by(self, host: RedisHost) -> str:
        """How the log names the server that just answered (a subclass knows better)."""
        return host.address

    def close(self) -> None:
        for host in self.hosts:
            host.client.close()

    @staticmethod
    def _auth_message(host: RedisHost, exc: Exception) -> str:
        if host.credentials.password is None:
            return (
                f"{LABEL} at {host.address} requires authentication ({exc}); "
                "give user:password@ or :password@ in the transport URL"
            )
        return (
            f"{LABEL} at {host.address} rejected the credentials of user "
            f"{host.credentials.user!r}: {exc}"
        )

    @staticmethod
    def _certificate_message(host: RedisHost, reason: str) -> str:
        return (
            f"{LABEL} at {host.address}: the server's TLS certificate was refused "
            f"({reason}); {redis_tls.certificate_fix(reason)}"
        )

    def _refused_message(self, host: RedisHost, what: str, exc: Exception) -> str:
        return (
            f"{LABEL} at {host.address} (db {self.db}, user {host.credentials.user!r}) "
            f"failed to {what}: {exc}"
        )

    @staticmethod
    def _unreachable_message(failures: list[tuple[RedisHost, Exception]]) -> str:
        if len(failures) == 1:
            host, exc = failures[0]
            return f"{LABEL} at {host.address} unreachable: {exc}{_tls_hint(host, exc)}"
        addresses = ", ".join(host.address for host, _ in failures)
        details = "; ".join(
            f"{host.address}: {exc}{_tls_hint(host, exc)}" for host, exc in failures
        )
        return f"{LABEL} at {addresses} unreachable: {details}"


def _subscribed(client: redis.Redis, channel: str, timeout: float) -> PubSub:
    pubsub = client.pubsub()
    try:
        pubsub.subscribe(channel)
        confirmed = pubsub.get_message(timeout=timeout)
        if confirmed is None or confirmed["type"] != "subscribe":
            raise redis_exc.TimeoutError(f"SUBSCRIBE {channel} not confirmed in {timeout:.0f}s")
    except BaseException:
        pubsub.close()
        raise
    return pubsub


def _tls_hint(host: RedisHost, exc: Exception) -> str:
    return redis_tls.failure_hint(exc, host.tls)


def glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern (SCAN MATCH).

    >>> glob_escape("zmq[1]/rpc*")
    'zmq\\\\[1\\\\]/rpc\\\\*'
    """
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)
