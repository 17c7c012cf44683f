"""The connection to Redis through Redis Sentinel.

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

A ``RedisBackend`` with one host whose client is redis-py's
``Sentinel.master_for`` client: redis-py asks the sentinels where the master
is whenever it opens a connection, so after a failover the first request
fails (the old master is gone or has become a read-only replica), and the
next connection goes to the promoted replica. Requests made during the
failover window raise :class:`BackendUnavailable`, as during any Redis
outage; callers already retry those.

What we add is the explanation: when redis-py finds no master, we ask each
sentinel what it knows, to tell an outage (no sentinel reachable, the master
down) from a configuration error (a wrong service name or sentinel password,
an untrusted certificate, a host that is no sentinel).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import redis
from oslo_config import cfg
from oslo_messaging import TransportHost, TransportURL
from redis import exceptions as redis_exc
from redis.sentinel import MasterNotFoundError, Sentinel

from zmqdriver.backends import redis_tls
from zmqdriver.backends.redis import (
    DEFAULT_HOST,
    Credentials,
    RedisBackend,
    RedisHost,
    check_query,
    format_address,
    stale_connection_retry,
)
from zmqdriver.exceptions import BackendError, BackendUnavailable
from zmqdriver.options import GROUP

DEFAULT_SENTINEL_PORT = 26379
URL_FORM = "zmq+sentinel://[user:password@]host1:26379[,host2:26379,...]/<service>[?db=N]"
QUERY_OPTIONS = ("db", "sentinel_username", "sentinel_password", redis_tls.QUERY_OPTION)
_PREFIX = "Redis Sentinel matchmaker"

T = TypeVar("T")

_AUTH_ERRORS = (
    redis_exc.AuthenticationError,
    redis_exc.AuthorizationError,
    redis_exc.NoPermissionError,
)


@dataclass
class Survey:
    """What each sentinel said about a service, grouped by what it means."""

    unreachable: list[tuple[str, Exception]] = field(default_factory=list)
    refused: list[tuple[str, Exception]] = field(default_factory=list)
    unknown: list[tuple[str, list[str]]] = field(default_factory=list)  # (address, monitored)
    down: list[tuple[str, str]] = field(default_factory=list)  # (address, master's flags)


class SentinelBackend(RedisBackend):
    """The master of ``service``, wherever the sentinels say it is right now."""

    def __init__(self, sentinel: Sentinel, service: str, db: int, master: RedisHost) -> None:
        super().__init__([master], db)
        self.sentinel = sentinel
        self.service = service
        self.sentinel_addresses = [_address_of(client) for client in sentinel.sentinels]

    @classmethod
    def from_url(cls, conf: cfg.ConfigOpts, url: TransportURL) -> SentinelBackend:
        service = url.virtual_host
        if not service:
            raise BackendError(
                f"{_PREFIX}: the transport URL names no master service; "
                f"write {URL_FORM} (the <service> of 'sentinel monitor <service> ...')"
            )
        query = dict(url.query or {})
        db, sentinel_credentials = _parse_query(query)
        tls = redis_tls.connection_kwargs(conf, query)
        credentials = _master_credentials(url.hosts)
        timeout = conf[GROUP].zmq_matchmaker_timeout
        sentinel = Sentinel(
            _sentinel_addresses(url.hosts),
            sentinel_kwargs=_client_kwargs(sentinel_credentials, timeout, tls),
        )
        client = sentinel.master_for(
            service, db=db, **_client_kwargs(credentials, timeout, tls), decode_responses=True
        )
        sentinels = ", ".join(format_address(h, p) for h, p in _sentinel_addresses(url.hosts))
        address = f"master {service!r} (sentinels {sentinels})"
        return cls(sentinel, service, db, RedisHost(client, address, credentials, bool(tls)))

    def execute(self, what: str, operation: Callable[[redis.Redis], T]) -> T:
        def located(client: redis.Redis) -> T:
            try:
                return operation(client)
            except MasterNotFoundError as exc:
                # Not a redis error any more, so RedisBackend passes it on as is.
                raise self._no_master_error() from exc

        try:
            return super().execute(what, located)
        except BackendUnavailable as exc:  # no master: an outage the parent did not see
            self.health.failed(str(exc))
            raise

    def _answered_by(self, host: RedisHost) -> str:
        # The master the sentinels named last, so a failover shows in the log
        # as a new address (redis-py keeps it on the pool's proxy).
        pool = host.client.connection_pool
        address = getattr(getattr(pool, "proxy", pool), "master_address", None)
        if not address:
            return host.address
        return f"master {self.service!r} at {format_address(*address)}"

    def close(self) -> None:
        super().close()
        for sentinel in self.sentinel.sentinels:
            sentinel.close()

    def survey(self) -> Survey:
        """Ask every sentinel about our service: why redis-py found no master."""
        found = Survey()
        for client in list(self.sentinel.sentinels):
            address = format_address(*_address_of(client))
            try:
                masters = client.sentinel_masters()
            except _AUTH_ERRORS as exc:
                # Before ConnectionError, which some subclass: a password problem.
                found.refused.append((address, exc))
                continue
            except (redis_exc.ConnectionError, redis_exc.TimeoutError) as exc:
                # An untrusted certificate is a configuration error, not an outage.
                failed = found.refused if redis_tls.rejected_certificate(exc) else found.unreachable
                failed.append((address, exc))
                continue
            except redis_exc.RedisError as exc:
                # Not a sentinel at all (a plain Redis, another protocol).
                found.refused.append((address, exc))
                continue
            state = masters.get(self.service)
            if state is None:
                found.unknown.append((address, sorted(masters)))
            elif not self.sentinel.check_master_state(state, self.service):
                flags = state.get("flags", "?")  # a string, or a set over RESP3
                found.down.append((address, _flags_text(flags)))
        return found

    def _no_master_error(self) -> BackendError:
        return no_master_error(self.service, self.survey(), self.hosts[0].tls)


def no_master_error(service: str, survey: Survey, tls: bool) -> BackendError:
    """The error that explains ``survey``: an outage, or what to fix in the configuration."""
    unreachable = "; ".join(
        f"{address}: {error}{redis_tls.failure_hint(error, tls)}"
        for address, error in survey.unreachable
    )
    others = f" (unreachable: {unreachable})" if unreachable else ""
    if survey.down:
        # Some sentinel knows the master: an outage, perhaps a failover under way.
        reports = ", ".join(f"{address} reports {flags}" for address, flags in survey.down)
        return BackendUnavailable(
            f"{_PREFIX}: master {service!r} is down ({reports}) until it returns or "
            f"the sentinels promote a replica{others}"
        )
    if survey.refused:
        details = "; ".join(f"{address}: {error}" for address, error in survey.refused)
        return BackendError(
            f"{_PREFIX}: could not learn master {service!r} from the sentinels ({details})"
            f"{refused_hint(survey.refused)}{others}"
        )
    if survey.unknown:
        addresses = ", ".join(address for address, _ in survey.unknown)
        known = sorted({name for _, names in survey.unknown for name in names})
        return BackendError(
            f"{_PREFIX}: no master named {service!r} is known to the sentinels at "
            f"{addresses} (they monitor: {', '.join(known) or 'nothing'}); check the "
            f"service name in the transport URL, {URL_FORM}{others}"
        )
    if survey.unreachable:
        addresses = ", ".join(address for address, _ in survey.unreachable)
        return BackendUnavailable(
            f"{_PREFIX}: no sentinel reachable for master {service!r} at {addresses}: {unreachable}"
        )
    # Every sentinel knows a healthy master by the time we asked: one was just promoted.
    return BackendUnavailable(
        f"{_PREFIX}: the sentinels had no master {service!r} a moment ago and have one now "
        "(a failover just ended); try again"
    )


def refused_hint(refused: list[tuple[str, Exception]]) -> str:
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


def _client_kwargs(credentials: Credentials, timeout: float, tls: dict[str, object]) -> dict:
    """redis-py arguments shared by the sentinel clients and the master's."""
    return {
        "username": credentials.username,
        "password": credentials.password,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # redis-py's default would back off for seconds; waiting is the caller's decision.
        "retry": stale_connection_retry(),
        **tls,
    }


def _sentinel_addresses(hosts: list[TransportHost]) -> list[tuple[str, int]]:
    return [
        (host.hostname or DEFAULT_HOST, host.port or DEFAULT_SENTINEL_PORT) for host in hosts
    ] or [(DEFAULT_HOST, DEFAULT_SENTINEL_PORT)]


def _address_of(client: redis.Redis) -> tuple[str, int]:
    kwargs = client.connection_pool.connection_kwargs
    return kwargs["host"], kwargs["port"]


def _flags_text(flags: str | set[str]) -> str:
    """The master's flags as the sentinel wrote them.

    >>> _flags_text("s_down,master"), _flags_text({"s_down", "master"})
    ('s_down,master', 'master,s_down')
    """
    return flags if isinstance(flags, str) else ",".join(sorted(flags))


def _parse_query(query: dict[str, str]) -> tuple[int, Credentials]:
    """``db`` and the sentinels' own credentials from the URL's query."""
    check_query(query, QUERY_OPTIONS, "Redis Sentinel")
    db_text = query.get("db", "0")
    try:
        db = int(db_text)
    except ValueError:
        db = -1
    if db < 0:
        raise BackendError(
            f"Invalid Redis database {db_text!r} in the transport URL (?db=): "
            "expected a database number such as ?db=0"
        )
    username = query.get("sentinel_username") or None
    password = query.get("sentinel_password")
    if username and password is None:
        raise BackendError(
            f"{_PREFIX}: sentinel_username {username!r} given without "
            "sentinel_password in the transport URL"
        )
    return db, Credentials(username, password)


def _master_credentials(hosts: list[TransportHost]) -> Credentials:
    """The one ``user:password`` of the URL (for the master), or none."""
    given = {(h.username or None, h.password) for h in hosts}
    given.discard((None, None))
    if len(given) > 1:
        raise BackendError(
            f"{_PREFIX}: the hosts of the transport URL carry different "
            "credentials; they are the Redis master's, so give them once (on the first host)"
        )
    username, password = given.pop() if given else (None, None)
    if username and password is None:
        raise BackendError(
            f"{_PREFIX}: user {username!r} given without a password; "
            "write user:password@host, or :password@host for the default user"
        )
    return Credentials(username, password)
