"""The etcd matchmaker: ``zmq+etcd://[user:password@]host:port[,host2:port2][?tls=true]``.

Each record is one etcd key, ``<key>/@/<digest>``, whose value is the record:
``<key>`` is the matchmaker key (``<prefix>/rpc/<exchange>/<topic>[/<server>]``,
whose components are URL-quoted, so none of them is ``@``) and ``<digest>`` a
hash of the record. A lookup reads the keys that start with ``<key>/@/``.

Expiry is a lease. The records a process registers with one time to live
share one lease of that TTL (servers register everything with
``zmq_target_expire``, so in practice: one lease per server process).
Registering again keeps the lease alive, so the registrar's refresh keeps
every record of the process alive at the cost of one keepalive; a record
already attached to the live lease is not written again (no needless
revisions, nor events for watchers). A process that dies loses all its
records at once when its lease runs out; a graceful stop unregisters (deletes)
them first, and ``close()`` revokes the leases. Unlike Redis, refreshing one
record refreshes every record of its lease: the contract's per-record expiry
holds for records registered together, as the registrar does.

When etcd lost the lease (it ran out while this process was frozen or cut
off, or etcd came back without its data), ``generation`` reports it within
the registrar's next check and the registrar registers everything again on a
new lease; a ``put`` that races with the loss retries on a new lease itself.

``watch`` pushes changes to clients (``zmqdriver.discovery.Directory``): an
etcd watch on the prefix of the RPC keys, whose events name the matchmaker
key that changed. Since refreshes write nothing, the events are the changes
that matter: a record added, deleted, or gone with its lease.

The connection (several members, TLS, credentials, error messages) is
:class:`zmqdriver.backends.etcd.EtcdBackend`. Notifications do not use etcd:
see ``zmqdriver.notify.notification_store_for``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from oslo_config import cfg
from oslo_messaging import TransportURL

from zmqdriver.backends.etcd import EtcdBackend, LeaseLost, WatchStream
from zmqdriver.exceptions import BackendError
from zmqdriver.matchmaker.base import ListedRecord, MatchMaker
from zmqdriver.matchmaker.watch import FollowedWatch
from zmqdriver.throttle import Throttle

LOG = logging.getLogger(__name__)

RECORDS = "/@/"  # between a matchmaker key and its records' digests
# A lease renewed this recently is not renewed again by the next register():
# the registrar's refresh of many records costs one keepalive.
KEEPALIVE_EVERY = 0.5
# A watch silent this long is opened again (a connection that died without a
# word must not pass for "up"); clients then read their keys again once.
WATCH_IDLE = 60.0


def record_key(key: str, record: str) -> str:
    """The etcd key of ``record`` under the matchmaker key ``key``.

    >>> record_key("zmqdriver/rpc/openstack/compute", '{"v": 1}')
    'zmqdriver/rpc/openstack/compute/@/9ab2253fc38981f5be9c25cf0a34b62c'
    """
    return f"{key}{RECORDS}{hashlib.sha256(record.encode()).hexdigest()[:32]}"


def records_prefix(key: str) -> str:
    """What the etcd keys of the records under ``key`` start with.

    >>> records_prefix("zmqdriver/rpc/openstack/compute")
    'zmqdriver/rpc/openstack/compute/@/'
    """
    return key + RECORDS


def matchmaker_key(etcd_key: str) -> str | None:
    """The matchmaker key of a record's etcd key; None for any other etcd key.

    >>> matchmaker_key("zmqdriver/rpc/openstack/compute/@/0d9b")
    'zmqdriver/rpc/openstack/compute'
    >>> matchmaker_key("zmqdriver/generation") is None
    True
    """
    key, found, _ = etcd_key.rpartition(RECORDS)
    return key if found else None


def lease_ttl(expire: float) -> int | None:
    """The lease TTL in whole seconds for ``expire`` (None: no lease, never expires).

    >>> lease_ttl(60), lease_ttl(0.3), lease_ttl(0), lease_ttl(-1)
    (60, 1, None, None)
    """
    return max(1, math.ceil(expire)) if expire > 0 else None


@dataclass
class _Lease:
    """A lease this process holds, and the records it already carries."""

    id: int
    pid: int  # a forked child must not keep its parent's lease alive
    carries: set[str] = field(default_factory=set)  # etcd keys put with this lease


class EtcdMatchMaker(MatchMaker):
    """Records as etcd keys attached to per-process leases; see the module docstring."""

    def __init__(self, conf: cfg.ConfigOpts, url: TransportURL) -> None:
        super().__init__(conf, url)
        self.backend: EtcdBackend = EtcdBackend.from_url(conf, url)
        self._lock = threading.Lock()  # the leases' bookkeeping
        self._renewing = threading.Lock()  # held while a lease is renewed or granted
        self._leases: dict[int, _Lease] = {}  # by TTL
        self._keepalives = Throttle(every=KEEPALIVE_EVERY)

    def register(self, key: str, record: str, expire: float) -> None:
        etcd_key = record_key(key, record)
        ttl = lease_ttl(expire)
        if ttl is None:
            self._forget_key(etcd_key)
            self.backend.put(etcd_key, record, None)
            return
        for attempt in (1, 2):
            lease = self._live_lease(ttl)
            if etcd_key in lease.carries:
                return
            try:
                self.backend.put(etcd_key, record, lease.id)
            except LeaseLost:
                self._drop(ttl, lease)
                if attempt == 2:
                    raise
                continue
            self._forget_key(etcd_key)  # a record moves from another lease to this one
            with self._lock:
                lease.carries.add(etcd_key)
            return

    def _live_lease(self, ttl: int) -> _Lease:
        """This process's lease of ``ttl``, renewed (at most every KEEPALIVE_EVERY s) or new.

        One thread at a time, so racing registrations never grant two leases.
        """
        with self._renewing:
            with self._lock:
                lease = self._leases.get(ttl)
            if lease is not None and lease.pid == os.getpid():
                if self._keepalives.admit(lease.id) is None:
                    return lease  # renewed a moment ago
                if self.backend.keepalive(lease.id):
                    return lease
                LOG.warning(
                    "%s: lease %x ran out (this process was cut off or frozen for %ss, or etcd "
                    "lost its data); registering on a new lease",
                    self.backend.label,
                    lease.id,
                    ttl,
                )
                self._drop(ttl, lease)
            lease = _Lease(self.backend.grant(ttl), os.getpid())
            with self._lock:
                self._leases[ttl] = lease
            self._keepalives.forget(lease.id)
            self._keepalives.admit(lease.id)  # just granted: as good as renewed
            return lease

    def _drop(self, ttl: int, lease: _Lease) -> None:
        with self._lock:
            if self._leases.get(ttl) is lease:
                del self._leases[ttl]
        self._keepalives.forget(lease.id)

    def _forget_key(self, etcd_key: str) -> None:
        with self._lock:
            for lease in self._leases.values():
                lease.carries.discard(etcd_key)

    def unregister(self, key: str, record: str) -> None:
        etcd_key = record_key(key, record)
        self._forget_key(etcd_key)
        self.backend.delete(etcd_key)

    def lookup(self, key: str) -> list[str]:
        return sorted({entry.value for entry in self.backend.get_prefix(records_prefix(key))})

    def generation(self, key: str) -> str | None:
        """The ids of this process's live leases: a lease etcd lost changes it.

        The registrar asks every second while it holds records; a change makes
        it register everything again, on a new lease. ``key`` is not used: the
        leases themselves tell.
        """
        with self._lock:
            leases = [(ttl, lease) for ttl, lease in self._leases.items()]
        for ttl, lease in leases:
            if lease.pid == os.getpid() and self.backend.time_to_live(lease.id) < 0:
                LOG.warning(
                    "%s: etcd no longer has lease %x (it ran out, or etcd lost its data)",
                    self.backend.label,
                    lease.id,
                )
                self._drop(ttl, lease)
        with self._lock:
            return ",".join(f"{lease.id:x}" for lease in self._leases.values()) or "none"

    def watch(self, prefix: str, on_change: Callable[[str | None], None]) -> EtcdWatch:
        watch = EtcdWatch(self.backend, prefix, on_change)
        watch.start()
        return watch

    def records(self, prefix: str) -> list[ListedRecord]:
        remaining: dict[int, int] = {}  # lease -> seconds left, read once per lease
        listed = []
        for entry in self.backend.get_prefix(prefix):
            key = matchmaker_key(entry.key)
            if key is None:
                continue
            expires_in = None
            if entry.lease is not None:
                if entry.lease not in remaining:
                    remaining[entry.lease] = self.backend.time_to_live(entry.lease)
                expires_in = float(max(0, remaining[entry.lease]))
            listed.append(ListedRecord(key, entry.value, expires_in))
        return sorted(listed, key=lambda item: (item.key, item.record))

    def close(self) -> None:
        """Revoke this process's leases (their records go at once), then disconnect."""
        with self._lock:
            leases = [lease for lease in self._leases.values() if lease.pid == os.getpid()]
            self._leases.clear()
        for lease in leases:
            try:
                self.backend.revoke(lease.id)
            except BackendError as exc:
                LOG.info(
                    "%s: could not revoke lease %x (%s); it runs out",
                    self.backend.label,
                    lease.id,
                    exc,
                )
        self.backend.close()


class EtcdWatch(FollowedWatch):
    """Changes under a prefix, pushed to ``on_change`` from a thread of its own.

    The thread opens an etcd watch, says ``on_change(None)`` once it is in
    place (``up``), then ``on_change(key)`` for the matchmaker key of every
    change. When the stream breaks it is ``up`` no more (clients poll) and it
    is opened again with backoff; silence for WATCH_IDLE seconds reopens it too.
    """

    def __init__(
        self, backend: EtcdBackend, prefix: str, on_change: Callable[[str | None], None]
    ) -> None:
        super().__init__(backend.label, prefix, on_change, "zmqdriver-etcd-watch")
        self._backend = backend
        self._lock = threading.Lock()
        self._stream: WatchStream | None = None

    def _interrupt(self) -> None:
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.interrupt()  # the watch's thread closes it

    def _quiet(self, exc: Exception) -> bool:
        return _idle(exc)

    def _follow(self) -> None:
        stream = self._backend.open_watch(self.prefix, WATCH_IDLE)
        with self._lock:
            self._stream = stream
        try:
            if not self._stopped.is_set():
                self._pass_on(stream)
        finally:
            with self._lock:
                self._stream = None
            stream.close()

    def _pass_on(self, stream: WatchStream) -> None:
        for etcd_key in stream.keys():
            if self._stopped.is_set():
                return
            if etcd_key is None:
                self._came_up()
                continue
            key = matchmaker_key(etcd_key)
            if key is not None:
                self._changed(key)


def _idle(exc: BaseException) -> bool:
    """Whether ``exc`` is the read timeout of a watch that was merely silent."""
    return "read timed out" in str(exc).lower()
