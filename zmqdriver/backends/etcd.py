"""The connection to etcd: ``zmq+etcd://[user:password@]host:port[,host2:port2][?tls=true]``.

Through etcd3gw, the client OpenStack's tooz uses: JSON over etcd's gRPC
gateway (``/v3/``), on plain HTTP(S) with requests, so it works the same in
threads and under eventlet. Users hand ``execute`` an operation on an
``etcd3gw.Etcd3Client``; the backend runs it on the current member and turns
etcd3gw's errors into :class:`BackendError` (retrying will not help: wrong
credentials, an untrusted certificate, a request etcd refuses) or
:class:`BackendUnavailable` (an outage, or a cluster without a leader).

Several members may be listed: the first reachable one is used until it
fails, then the next one. Leases and keys are the cluster's, so a lease
granted through one member is kept alive through another.

TLS is on with ``?tls=true`` (or ``zmq_etcd_tls_enabled``), verified against
``zmq_etcd_tls_ca_file``, with an optional client certificate. Credentials in
the URL are exchanged for an auth token (etcd's ``/v3/auth/authenticate``),
sent with every request and renewed when etcd says it expired.

etcd3gw is an optional dependency (``pip install zmqdriver[etcd]``): nothing
imports it until a ``zmq+etcd://`` URL is used.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from oslo_config import cfg
from oslo_messaging import TransportHost, TransportURL

from zmqdriver.backends import redis_tls
from zmqdriver.backends.redis import Health, check_query, format_address
from zmqdriver.exceptions import BackendError, BackendUnavailable
from zmqdriver.keyfiles import check_tls_files
from zmqdriver.options import GROUP

LOG = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2379
QUERY_OPTION = redis_tls.QUERY_OPTION  # the same ?tls= as Redis URLs
LABEL = "etcd matchmaker"

_FILE_OPTIONS = ("zmq_etcd_tls_ca_file", "zmq_etcd_tls_cert_file", "zmq_etcd_tls_key_file")
# What etcd says (in the gateway's JSON error) when a token is missing, expired or wrong,
# and when credentials are refused. Matched on the text: the gateway's HTTP codes vary.
_TOKEN_EXPIRED = ("invalid auth token",)
_AUTH_REFUSED = (
    "authentication failed",
    "user name is empty",
    "permission denied",
    "authentication is not enabled",
)

T = TypeVar("T")


def etcd3gw_module():
    """The etcd3gw package, imported on first use (it pulls in futurist and eventlet).

    BackendError saying how to install it when it is missing.
    """
    try:
        import etcd3gw
        import etcd3gw.exceptions
    except ImportError as exc:
        raise BackendError(
            "zmq+etcd:// needs the etcd3gw package: pip install 'zmqdriver[etcd]' "
            f"(or pip install etcd3gw): {exc}"
        ) from exc
    return etcd3gw


def _session_class():
    """A requests Session whose own CA file wins over the environment's.

    requests lets REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) replace a session's
    ``verify`` (psf/requests#3829): with it set, as many hosts do, etcd's CA
    would be ignored and every request refused.
    """
    import requests  # etcd3gw's HTTP library

    class Session(requests.Session):
        def merge_environment_settings(self, url, proxies, stream, verify, cert):
            if verify is None:
                verify = self.verify
            return super().merge_environment_settings(url, proxies, stream, verify, cert)

    return Session


def etcd_errors():
    """etcd3gw's exception module (see etcd3gw_module)."""
    return etcd3gw_module().exceptions


class LeaseLost(BackendUnavailable):
    """A put named a lease etcd no longer has (it expired, or etcd lost its data).

    The user grants a new lease and puts again; an outage in all but name.
    """


@dataclass(frozen=True)
class Entry:
    """A key as ``get_prefix`` returns it: its value and its lease (None: no lease)."""

    key: str
    value: str
    lease: int | None


@dataclass(frozen=True)
class Tls:
    """How to reach etcd over HTTPS: the CA to verify it with, and our certificate."""

    ca_file: str | None
    cert_file: str | None
    key_file: str | None


def tls_from(conf: cfg.ConfigOpts, query: dict[str, str]) -> Tls | None:
    """The TLS settings of the options and the URL (None: plain HTTP); checks the files now."""
    zconf = conf[GROUP]
    flag = redis_tls.url_flag(query, "etcd")
    enabled = zconf.zmq_etcd_tls_enabled if flag is None else flag
    files = [name for name in _FILE_OPTIONS if zconf[name]]
    if not enabled:
        if files and flag is None:
            raise BackendError(
                f"[{GROUP}] {', '.join(files)} set but TLS to etcd is off: set "
                f"zmq_etcd_tls_enabled = true (or ?{QUERY_OPTION}=true in the transport URL)"
            )
        return None
    tls = Tls(zconf.zmq_etcd_tls_ca_file, zconf.zmq_etcd_tls_cert_file, zconf.zmq_etcd_tls_key_file)
    check_tls_files("zmq_etcd_tls", tls.ca_file, tls.cert_file, tls.key_file)
    return tls


@dataclass(frozen=True)
class Member:
    """Where one member of the cluster listens, and who we are to it."""

    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)  # never in logs or tracebacks

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)


def member_from_url(transport_host: TransportHost) -> Member:
    """One member of the transport URL (127.0.0.1:2379 by default).

    >>> member_from_url(TransportHost(hostname="etcd1", port=2379))
    Member(host='etcd1', port=2379, username=None)
    >>> member_from_url(TransportHost()).address
    '127.0.0.1:2379'
    """
    member = Member(
        transport_host.hostname or DEFAULT_HOST,
        transport_host.port or DEFAULT_PORT,
        transport_host.username or None,
        transport_host.password,
    )
    if (member.username is None) != (member.password is None):
        raise BackendError(
            f"{LABEL} at {member.address}: give both a user and a password "
            "(user:password@host) or neither"
        )
    return member


class EtcdHost:
    """A client for one member; made again in a forked child (sockets are not shared)."""

    def __init__(self, member: Member, timeout: float, tls: Tls | None) -> None:
        self.member = member
        self.address = member.address
        self.username = member.username
        self.tls = tls is not None
        self._timeout = timeout
        self._tls = tls
        self._pid = os.getpid()
        self.token_lock = threading.Lock()
        self.client = self._connect()

    def _connect(self):
        tls = self._tls
        session = _session_class()()
        if tls is not None and tls.ca_file:
            session.verify = tls.ca_file
        if tls is not None and tls.cert_file:
            session.cert = (tls.cert_file, tls.key_file)
        return etcd3gw_module().Etcd3Client(
            host=self.member.host,
            port=self.member.port,
            protocol="https" if tls else "http",
            timeout=self._timeout,
            session=session,
        )

    def current(self):
        """The client of this process: a forked child gets its own connections (and token)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self.client = self._connect()
        return self.client


def detail(exc: BaseException) -> str:
    """The text of an etcd3gw error: its detail (the gateway's JSON or requests' message)."""
    text = getattr(exc, "detail_text", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def reason(exc: BaseException) -> str:
    """The short cause of a failed connection, for "unreachable" messages.

    >>> reason(ValueError("HTTPConnectionPool(host='e1', port=2379): Max retries exceeded "
    ...     "with url: /v3/kv/range (Caused by NewConnectionError('<...>: Failed to establish "
    ...     "a new connection: [Errno 111] Connection refused'))"))
    '[Errno 111] Connection refused'
    >>> reason(ValueError("HTTPConnectionPool(host='e1', port=2379): Read timed out. (read "
    ...     "timeout=5.0)"))
    'Read timed out. (read timeout=5.0)'
    >>> reason(ValueError('{"error":"etcdserver: no leader"}'))
    '{"error":"etcdserver: no leader"}'
    """
    text = detail(exc)
    errno = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    if errno:
        return errno.group(0).strip()
    if text.startswith("HTTP") and "): " in text:
        return text.split("): ", 1)[1]  # drop requests' "HTTPConnectionPool(host, port)"
    return text


def classify(exc: BaseException) -> str:
    """What an etcd3gw error means for us.

    ``token`` (renew the auth token), ``auth`` (credentials refused),
    ``certificate`` (TLS verification failed), ``tls needed`` (plain HTTP to
    a TLS member), ``unavailable`` (try another member, later) or ``refused``
    (etcd answered no).

    >>> etcd_exc = etcd_errors()
    >>> classify(etcd_exc.ConnectionFailedError("Connection refused"))
    'unavailable'
    >>> classify(etcd_exc.Etcd3Exception('{"error":"etcdserver: invalid auth token"}'))
    'token'
    >>> classify(etcd_exc.ConnectionFailedError("[SSL: CERTIFICATE_VERIFY_FAILED] ..."))
    'certificate'
    >>> classify(etcd_exc.Etcd3Exception('{"error":"etcdserver: request is too large"}'))
    'refused'
    """
    etcd_exc = etcd_errors()
    text = detail(exc).lower()
    if any(marker in text for marker in _TOKEN_EXPIRED):
        return "token"
    if any(marker in text for marker in _AUTH_REFUSED):
        return "auth"
    if "certificate_verify_failed" in text or "certificate verify failed" in text:
        return "certificate"
    if "http request to an https server" in text:
        return "tls needed"
    if isinstance(exc, etcd_exc.ConnectionFailedError | etcd_exc.ConnectionTimeoutError):
        return "unavailable"
    if "no leader" in text or "leader changed" in text or "timed out" in text:
        return "unavailable"  # an election in progress: another member, or later, will do
    return "refused"


class EtcdBackend:
    """The members of one etcd cluster, used in turn; see the module docstring."""

    label = LABEL

    def __init__(self, hosts: list[EtcdHost]) -> None:
        self.hosts = hosts
        # Index of the member that answered last; as in RedisBackend, an int
        # written by racing threads just picks a member each.
        self._current = 0
        self.health = Health(LABEL, log=LOG)

    @classmethod
    def from_url(cls, conf: cfg.ConfigOpts, url: TransportURL) -> EtcdBackend:
        """The backend a ``zmq+etcd://`` URL names; configuration errors raise now."""
        etcd3gw_module()  # a missing package is a configuration error: say so now
        query = dict(url.query or {})
        check_query(query, (QUERY_OPTION,), "etcd")
        if url.virtual_host:
            raise BackendError(
                f"Unexpected path /{url.virtual_host} in the etcd transport URL: keys go under "
                f"[{GROUP}] zmq_matchmaker_prefix; write zmq+etcd://host:port[,host2:port2]"
            )
        tls = tls_from(conf, query)
        timeout = conf[GROUP].zmq_matchmaker_timeout
        hosts = list(url.hosts) or [TransportHost(hostname=DEFAULT_HOST)]
        return cls([EtcdHost(member_from_url(host), timeout, tls) for host in hosts])

    def execute(self, what: str, operation: Callable[[object], T]) -> T:
        """``operation(client)`` on the current member, failing over to the next ones.

        ``what`` names the operation in error messages ("failed to {what}").
        """
        etcd_exc = etcd_errors()
        failures: list[tuple[EtcdHost, BaseException]] = []
        start = self._current
        for step in range(len(self.hosts)):
            index = (start + step) % len(self.hosts)
            host = self.hosts[index]
            try:
                result = self._on(host, operation)
            except etcd_exc.Etcd3Exception as exc:
                kind = classify(exc)
                if kind == "unavailable":
                    failures.append((host, exc))
                    continue
                raise BackendError(self._refusal(host, what, kind, exc)) from exc
            self._current = index
            self.health.answered(host.address)
            return result
        error = BackendUnavailable(self._unreachable_message(failures))
        self.health.failed(str(error))
        raise error

    def _on(self, host: EtcdHost, operation: Callable[[object], T]) -> T:
        """``operation`` on one member, authenticated first if the URL has credentials."""
        client = host.current()
        if host.username is None:
            return operation(client)
        if "Authorization" not in client.session.headers:
            self._authenticate(host, client)
        try:
            return operation(client)
        except etcd_errors().Etcd3Exception as exc:
            if classify(exc) != "token":
                raise
        self._authenticate(host, client)  # the token expired (etcd's --auth-token-ttl)
        return operation(client)

    @staticmethod
    def _authenticate(host: EtcdHost, client) -> None:
        with host.token_lock:
            client.session.headers.pop("Authorization", None)  # a stale token is refused
            reply = client.post(
                client.get_url("/auth/authenticate"),
                json={"name": host.member.username, "password": host.member.password},
            )
            client.session.headers["Authorization"] = reply["token"]

    # --- the few etcd calls discovery needs, each on the current member ----------------

    def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; returns its id."""
        reply = self.execute(
            "grant a lease", lambda c: c.post(c.get_url("/lease/grant"), json={"TTL": ttl, "ID": 0})
        )
        return int(reply["ID"])

    def keepalive(self, lease: int) -> bool:
        """Renew ``lease`` for its full TTL; False when etcd no longer has it."""
        return (
            self.execute("keep a lease alive", lambda c: etcd3gw_module().Lease(lease, c).refresh())
            > 0
        )

    def time_to_live(self, lease: int) -> int:
        """Seconds ``lease`` has left; -1 when etcd no longer has it."""
        return self.execute("read a lease", lambda c: etcd3gw_module().Lease(lease, c).ttl())

    def revoke(self, lease: int) -> None:
        """End ``lease`` now: etcd deletes every key attached to it."""
        self.execute("revoke a lease", lambda c: etcd3gw_module().Lease(lease, c).revoke())

    def put(self, key: str, value: str, lease: int | None) -> None:
        """Set ``key``, attached to ``lease`` (None: kept until deleted); LeaseLost if gone."""

        def put(client) -> None:
            try:
                client.put(
                    key, value, lease=etcd3gw_module().Lease(lease, client) if lease else None
                )
            except etcd_errors().Etcd3Exception as exc:
                if "lease not found" in detail(exc):
                    raise LeaseLost(f"{LABEL}: lease {lease:x} is gone") from exc
                raise

        self.execute("put a key", put)

    def delete(self, key: str) -> None:
        self.execute("delete a key", lambda c: c.delete(key))

    def get_prefix(self, prefix: str) -> list[Entry]:
        """Every key that starts with ``prefix``, sorted by key."""
        found = self.execute(
            "read keys", lambda c: c.get_prefix(prefix, sort_order="ascend", sort_target="key")
        )
        return [
            Entry(
                meta["key"].decode(),
                value.decode(),
                int(meta["lease"]) if int(meta.get("lease", 0)) else None,
            )
            for value, meta in found
        ]

    def open_watch(self, prefix: str, idle_timeout: float) -> WatchStream:
        """A stream of the changes under ``prefix``, from the current member.

        ``idle_timeout``: seconds without a byte after which reading the
        stream fails (a connection that died silently does not stay "up").
        """
        import requests  # etcd3gw's HTTP library

        body = {"create_request": {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))}}

        def open_stream(client):
            try:
                response = client.session.post(
                    client.get_url("/watch"),
                    json=body,
                    stream=True,
                    timeout=(client.timeout, idle_timeout),
                )
            except requests.RequestException as exc:
                raise etcd_errors().ConnectionFailedError(str(exc)) from exc
            if response.status_code != 200:
                text = response.text
                response.close()
                raise etcd_errors().Etcd3Exception(text, response.reason)
            return response

        return WatchStream(self.execute("watch keys", open_stream))

    def close(self) -> None:
        for host in self.hosts:
            host.current().session.close()

    @staticmethod
    def _refusal(host: EtcdHost, what: str, kind: str, exc: BaseException) -> str:
        if kind in ("auth", "token"):
            if host.username is None:
                return (
                    f"{LABEL} at {host.address} requires authentication ({detail(exc)}); "
                    "give user:password@ in the transport URL"
                )
            return f"{LABEL} at {host.address} refused user {host.username!r}: {detail(exc)}"
        if kind == "certificate":
            return (
                f"{LABEL} at {host.address}: the server's TLS certificate was refused "
                f"({detail(exc)}); zmq_etcd_tls_ca_file must name the CA that signed it, and "
                "the certificate must name the host of the transport URL"
            )
        if kind == "tls needed":
            return (
                f"{LABEL} at {host.address} serves TLS only: set zmq_etcd_tls_enabled = true "
                f"(or ?{QUERY_OPTION}=true in the transport URL)"
            )
        return f"{LABEL} at {host.address} failed to {what}: {detail(exc)}"

    @staticmethod
    def _unreachable_message(failures: list[tuple[EtcdHost, BaseException]]) -> str:
        details = "; ".join(
            f"{host.address}: {reason(exc)}{_tls_hint(host, exc)}" for host, exc in failures
        )
        addresses = ", ".join(host.address for host, _ in failures)
        return f"{LABEL} at {addresses} unreachable: {details}"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _prefix_end(prefix: str) -> str:
    """The end of the key range of ``prefix`` (its last byte plus one), as etcd wants it.

    >>> _prefix_end("zmqdriver/rpc/")
    'zmqdriver/rpc0'
    """
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class WatchStream:
    """The changes etcd pushes on one watch (``EtcdBackend.open_watch``)."""

    def __init__(self, response) -> None:
        self._response = response

    def keys(self) -> Iterator[str | None]:
        """None once the watch is in place, then the etcd key of each change as it happens.

        Ends by raising when the stream breaks (etcd went away, or said why).
        """
        for line in self._response.iter_lines(chunk_size=None):
            if not line.strip():
                continue
            message = json.loads(line)
            if "error" in message:
                raise BackendUnavailable(f"{LABEL}: the watch ended: {message['error']}")
            result = message.get("result", {})
            if result.get("canceled"):
                reason = result.get("cancel_reason") or "no reason given"
                raise BackendUnavailable(f"{LABEL}: etcd canceled the watch: {reason}")
            if result.get("created"):
                yield None
            for event in result.get("events", ()):
                yield base64.b64decode(event["kv"]["key"]).decode()
        raise BackendUnavailable(f"{LABEL}: the watch stream ended")

    def interrupt(self) -> None:
        """Wake a thread blocked in ``keys()`` (it fails); only that thread may ``close()``.

        Closing the response from another thread would race the reader on its
        buffered file (under eventlet: "reentrant call inside BufferedReader").
        """
        connection = getattr(self._response.raw, "_connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    def close(self) -> None:
        """Release the connection; by the thread that reads ``keys()``, when it is done."""
        self._response.close()


def _tls_hint(host: EtcdHost, exc: BaseException) -> str:
    """A hint when a plain client meets a TLS member or the reverse."""
    text = detail(exc).lower()
    if not host.tls and ("connection aborted" in text or "remotedisconnected" in text):
        return (
            "; the member closed the connection: if it serves TLS only, set "
            f"zmq_etcd_tls_enabled (or ?{QUERY_OPTION}=true in the transport URL)"
        )
    if host.tls and ("wrong version number" in text or "record layer failure" in text):
        return "; the member does not speak TLS on this port: drop ?tls=true"
    return ""
