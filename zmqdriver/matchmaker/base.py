"""The matchmaker contract: a directory of key -> records with expiry.

Keys and records are opaque strings here; ``zmqdriver.addressing`` decides
what they contain. A record is *live* until its expiry passes; ``register``
of an existing record refreshes its expiry. Implementations must be safe to
call from several threads, and must not be called from the I/O loop thread
(they may block on the network).

A matchmaker is one user of a backend (``zmqdriver.backends``); the
notification store is another. A matchmaker that exposes its backend as
``backend`` lets the driver keep notifications there too (see
``zmqdriver.notify.notification_store_for``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from oslo_config import cfg
from oslo_messaging import TransportURL

from zmqdriver.backends import Backend
from zmqdriver.exceptions import BackendError, BackendUnavailable, ListingNotSupported

# The names plugins raise: the package's backend errors under their old names.
MatchMakerError = BackendError
MatchMakerUnavailable = BackendUnavailable


@dataclass(frozen=True)
class ListedRecord:
    """A live record as ``MatchMaker.records`` lists it."""

    key: str
    record: str
    expires_in: float | None  # seconds from now on the store's clock; None: never


class Watch(Protocol):
    """A push channel ``MatchMaker.watch`` opened."""

    @property
    def up(self) -> bool:
        """Whether changes are pushed right now (clients poll while it is False)."""

    def stop(self) -> None:
        """Close the channel; ``on_change`` is not called after it returns."""


class MatchMaker(abc.ABC):
    """Register, unregister and look up the records stored under a key."""

    # The connection this matchmaker uses, for the notification store to
    # share: a RedisBackend keeps notifications in the same Redis; None (or
    # anything else) means the embedded store of this host.
    backend: Backend | None = None

    def __init__(self, conf: cfg.ConfigOpts, url: TransportURL) -> None:
        self.conf = conf
        self.url = url

    @abc.abstractmethod
    def register(self, key: str, record: str, expire: float) -> None:
        """Add ``record`` under ``key``, live for ``expire`` seconds from now.

        Registering a record again refreshes its expiry. ``expire <= 0``
        means the record never expires (it lives until unregistered).
        """

    @abc.abstractmethod
    def unregister(self, key: str, record: str) -> None:
        """Remove ``record`` from ``key``; removing a missing record is a no-op."""

    @abc.abstractmethod
    def lookup(self, key: str) -> list[str]:
        """Return the live records under ``key``, sorted, without duplicates."""

    def lookup_with_expiry(self, key: str) -> tuple[list[str], float | None]:
        """``lookup(key)``, and how long a client may keep that answer while a watch is up.

        A matchmaker whose watch does not push expiries returns the seconds
        until the first of those records expires (in Redis an expiry is a
        score that nothing acts on when it passes), and clients read again
        then. None (this default): every change, expiries included, is pushed.
        """
        return self.lookup(key), None

    def generation(self, key: str) -> str | None:
        """A token that changes when the backend lost its data (e.g. Redis restarted empty).

        Servers read it to register again at once instead of at their next
        refresh: when their push channel (``watch``) comes back up, since losing the
        data breaks it; every second while no channel is up; every 30 s besides
        (``reregister.generation_check_due``). None means the backend cannot tell.
        """
        return None

    def watch(self, prefix: str, on_change: Callable[[str | None], None]) -> Watch | None:
        """Push changes of the records under keys that start with ``prefix``.

        Optional (contract 2 without it still loads). ``on_change(key)`` is
        called, from a thread of the matchmaker's, after a record under
        ``key`` was added, removed or expired (or instead of expiries, see
        ``lookup_with_expiry``); ``on_change(None)`` each time
        the channel comes up, since changes made while it was down may have
        been missed (and servers then read ``generation``: the backend may have
        come back empty). While the returned watch is not ``up`` clients poll as
        without it. None (this default): the matchmaker cannot push.
        """
        return None

    def records(self, prefix: str) -> list[ListedRecord]:
        """Every live record under keys that start with ``prefix``, for ``zmqdriver-status``.

        Optional: operators' tools call it, the driver never does. A plugin
        that cannot list raises ListingNotSupported (this default).
        """
        raise ListingNotSupported(
            f"matchmaker {type(self).__name__} cannot list its records "
            "(not supported by this plugin)"
        )

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold no resources
        """Release connections and files held by this matchmaker."""
