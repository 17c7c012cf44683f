"""The Redis Sentinel matchmaker.

``zmq+sentinel://[user:password@]host1:26379[,host2:26379,...]/<service>[?db=N]``

* The hosts are the **sentinels** (port 26379 when omitted; ``127.0.0.1:26379``
  when none is given). One reachable sentinel that knows the master is enough.
* The path is the master's **service name**, as in ``sentinel monitor <service>
  ...`` of the sentinels' configuration (``mymaster`` in Redis' examples). It is
  required: there is no sensible default.
* ``user:password@`` are the credentials of the **Redis master and its
  replicas** (their ``requirepass`` or ACL user), not of the sentinels: in
  Redis the two are configured separately (``requirepass`` in sentinel.conf vs
  ``sentinel auth-pass``), and clients keep them apart too. oslo attaches them
  to the host they are written on; give them once, or identically everywhere.
* Query options: ``db=N`` selects the database (default 0);
  ``sentinel_username`` and ``sentinel_password`` authenticate to sentinels
  that have their own ``requirepass`` or ACL users; ``tls=true|false`` as for
  ``zmq+redis://``.
* TLS (``zmq_redis_tls_enabled`` or ``?tls=true``) covers the sentinels and
  the master alike, with the same CA and client certificate: a deployment
  that encrypts its data nodes gives its sentinels a ``tls-port`` too.

Everything else (records as sorted sets scored on the server's clock, the Lua
scripts, notifications, error reporting) is the Redis matchmaker's: this one
has a single backend whose client is redis-py's ``Sentinel.master_for``
client. That client asks the sentinels where the master is whenever it opens
a connection, so after a failover the first request fails (the old master is
gone or has become a read-only replica), and the next connection goes to the
promoted replica. Requests made during the failover window raise
:class:`MatchMakerUnavailable`, as during any Redis outage; callers already
retry those.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import redis
from redis import exceptions as redis_exc
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from zmqdriver.matchmaker import redis_tls
from zmqdriver.matchmaker.base import MatchMakerError, MatchMakerUnavailable
from zmqdriver.matchmaker.redis import (
    DEFAULT_HOST,
    RedisMatchMaker,
    _Backend,
    _format_address,
    check_query,
)

DEFAULT_SENTINEL_PORT = 26379
URL_FORM = "zmq+sentinel://[user:password@]host1:26379[,host2:26379,...]/<service>[?db=N]"
QUERY_OPTIONS = ("db", "sentinel_username", "sentinel_password", redis_tls.QUERY_OPTION)

T = TypeVar("T")

_AUTH_ERRORS = (
    redis_exc.AuthenticationError,
    redis_exc.AuthorizationError,
    redis_exc.NoPermissionError,
)


class _NoMaster(MasterNotFoundError):
    """No sentinel gave a usable master; says what each sentinel answered.

    A ConnectionError (as redis-py's own) so redis-py still drops the
    connection it was opening; :meth:`SentinelMatchMaker.execute` turns it
    into the matchmaker error that fits.
    """

    def __init__(
        self,
        service: str,
        unreachable: list[tuple[str, Exception]],
        refused: list[tuple[str, Exception]],
        unknown: list[tuple[str, list[str]]],
        down: list[tuple[str, str]],
    ) -> None:
        super().__init__(f"No master found for {service!r}")
        self.service = service
        self.unreachable = unreachable
        self.refused = refused
        self.unknown = unknown
        self.down = down


class _Sentinel(Sentinel):
    """redis-py's Sentinel client, remembering why no master could be found.

    redis-py's ``discover_master`` folds "no sentinel answers", "no sentinel
    knows this service" and "the master is down" into one message; the first
    and last are outages, the second a configuration error, so the caller must
    be able to tell them apart.
    """

    def discover_master(self, service_name: str) -> tuple[str, int]:
        unreachable: list[tuple[str, Exception]] = []
        refused: list[tuple[str, Exception]] = []
        unknown: list[tuple[str, list[str]]] = []
        down: list[tuple[str, str]] = []
        for index, sentinel in enumerate(self.sentinels):
            kwargs = sentinel.connection_pool.connection_kwargs
            address = _format_address(kwargs["host"], kwargs["port"])
            try:
                masters = sentinel.sentinel_masters()
            except _AUTH_ERRORS as exc:
                # Before ConnectionError, which some subclass: a password problem.
                refused.append((address, exc))
                continue
            except (redis_exc.ConnectionError, redis_exc.TimeoutError) as exc:
                # An untrusted certificate is a configuration error, not an outage.
                failed = refused if redis_tls.rejected_certificate(exc) else unreachable
                failed.append((address, exc))
                continue
            except redis_exc.RedisError as exc:
                # Not a sentinel at all (a plain Redis, another protocol):
                # a configuration error, but the next sentinel may still answer.
                refused.append((address, exc))
                continue
            state = masters.get(service_name)
            if state is None:
                unknown.append((address, sorted(masters)))
                continue
            if not self.check_master_state(state, service_name):
                flags = state.get("flags", "?")  # a string, or a set over RESP3
                down.append((address, flags if isinstance(flags, str) else ",".join(sorted(flags))))
                continue
            # Ask the sentinel that answered first next time, as redis-py does.
            self.sentinels[0], self.sentinels[index] = sentinel, self.sentinels[0]
            return state["ip"], state["port"]
        raise _NoMaster(service_name, unreachable, refused, unknown, down)


class _SentinelBackend(_Backend):
    """The master of a service, wherever the sentinels say it is right now."""

    def __init__(
        self,
        client: redis.Redis,
        address: str,
        credentials: tuple[str | None, str | None],
        tls: bool,
    ) -> None:
        # Not _Backend.__init__, which builds a client for one fixed host.
        self.address = address
        self.tls = tls
        username, password = credentials
        self.username = username
        self.password = password
        self.client = client
        self._load_scripts()


def _parse_query(query: dict[str, str]) -> tuple[int, str | None, str | None]:
    """``db``, sentinel username and sentinel password from the URL's query."""
    check_query(query, QUERY_OPTIONS, "Redis Sentinel")
    db_text = query.get("db", "0")
    try:
        db = int(db_text)
    except ValueError:
        db = -1
    if db < 0:
        raise MatchMakerError(
            f"Invalid Redis database {db_text!r} in the transport URL (?db=): "
            "expected a database number such as ?db=0"
        )
    username = query.get("sentinel_username") or None
    password = query.get("sentinel_password")
    if username and password is None:
        raise MatchMakerError(
            f"Redis Sentinel matchmaker: sentinel_username {username!r} given without "
            "sentinel_password in the transport URL"
        )
    return db, username, password


def _master_credentials(hosts) -> tuple[str | None, str | None]:
    """The one ``user:password`` of the URL (for the master), or (None, None)."""
    given = {(h.username or None, h.password) for h in hosts}
    given.discard((None, None))
    if len(given) > 1:
        raise MatchMakerError(
            "Redis Sentinel matchmaker: the hosts of the transport URL carry different "
            "credentials; they are the Redis master's, so give them once (on the first host)"
        )
    username, password = given.pop() if given else (None, None)
    if username and password is None:
        raise MatchMakerError(
            f"Redis Sentinel matchmaker: user {username!r} given without a password; "
            "write user:password@host, or :password@host for the default user"
        )
    return username, password


class SentinelMatchMaker(RedisMatchMaker):
    """The Redis matchmaker on the master that Redis Sentinel points to."""

    def _open_backends(self, url, timeout: float) -> tuple[int, list[_Backend]]:
        self.service = url.virtual_host
        if not self.service:
            raise MatchMakerError(
                "Redis Sentinel matchmaker: the transport URL names no master service; "
                f"write {URL_FORM} (the <service> of 'sentinel monitor <service> ...')"
            )
        query = dict(url.query or {})
        db, sentinel_username, sentinel_password = _parse_query(query)
        tls = redis_tls.connection_kwargs(self.conf, query)
        username, password = _master_credentials(url.hosts)
        self.sentinel_addresses = [
            (host.hostname or DEFAULT_HOST, host.port or DEFAULT_SENTINEL_PORT)
            for host in url.hosts
        ] or [(DEFAULT_HOST, DEFAULT_SENTINEL_PORT)]
        # One immediate retry replaces a pooled connection that went stale (a
        # restarted sentinel, a failed-over master); redis-py's default would
        # back off for seconds, and waiting is the caller's decision.
        retry = Retry(NoBackoff(), 1, supported_errors=(redis_exc.ConnectionError,))
        self._sentinel = _Sentinel(
            self.sentinel_addresses,
            sentinel_kwargs={
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
                "retry": retry,
                "username": sentinel_username,
                "password": sentinel_password,
                **tls,
            },
        )
        client = self._sentinel.master_for(
            self.service,
            db=db,
            username=username,
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=retry,
            decode_responses=True,
            **tls,
        )
        sentinels = ", ".join(_format_address(h, p) for h, p in self.sentinel_addresses)
        address = f"master {self.service!r} (sentinels {sentinels})"
        return db, [_SentinelBackend(client, address, (username, password), bool(tls))]

    def execute(self, what: str, operation: Callable[[_Backend], T]) -> T:
        def located(backend: _Backend) -> T:
            try:
                return operation(backend)
            except _NoMaster as exc:
                # Not a redis error any more, so RedisMatchMaker passes it on as is.
                raise self._no_master_error(exc) from exc

        return super().execute(what, located)

    def close(self) -> None:
        super().close()
        for sentinel in self._sentinel.sentinels:
            sentinel.close()

    def _no_master_error(self, exc: _NoMaster) -> MatchMakerError:
        prefix = "Redis Sentinel matchmaker"
        tls = self._backends[0].tls
        unreachable = "; ".join(
            f"{address}: {error}{redis_tls.failure_hint(error, tls)}"
            for address, error in exc.unreachable
        )
        others = f" (unreachable: {unreachable})" if unreachable else ""
        if exc.down:
            # Some sentinel knows the master: an outage, perhaps a failover under way.
            reports = ", ".join(f"{address} reports {flags}" for address, flags in exc.down)
            return MatchMakerUnavailable(
                f"{prefix}: master {exc.service!r} is down ({reports}) until it returns or "
                f"the sentinels promote a replica{others}"
            )
        if exc.refused:
            details = "; ".join(f"{address}: {error}" for address, error in exc.refused)
            return MatchMakerError(
                f"{prefix}: could not learn master {exc.service!r} from the sentinels ({details})"
                f"{self._refused_hint(exc.refused)}{others}"
            )
        if exc.unknown:
            addresses = ", ".join(address for address, _ in exc.unknown)
            known = sorted({name for _, names in exc.unknown for name in names})
            return MatchMakerError(
                f"{prefix}: no master named {exc.service!r} is known to the sentinels at "
                f"{addresses} (they monitor: {', '.join(known) or 'nothing'}); check the "
                f"service name in the transport URL, {URL_FORM}{others}"
            )
        addresses = ", ".join(address for address, _ in exc.unreachable)
        return MatchMakerUnavailable(
            f"{prefix}: no sentinel reachable for master {exc.service!r} at {addresses}: "
            f"{unreachable}"
        )

    @staticmethod
    def _refused_hint(refused: list[tuple[str, Exception]]) -> str:
        """What to fix when sentinels refused us: their credentials, or their certificates."""
        hint = ""
        if any(isinstance(error, _AUTH_ERRORS) for _, error in refused):
            hint = (
                "; the sentinels' own credentials go in ?sentinel_username=...&"
                "sentinel_password=... of the transport URL (user:password@ are the master's)"
            )
        reasons = [redis_tls.rejected_certificate(error) for _, error in refused]
        reason = next((r for r in reasons if r), None)
        if reason:
            hint += f"; the sentinels' TLS certificates: {redis_tls.certificate_fix(reason)}"
        return hint
