"""Notifications: store-and-forward through the matchmaker's backend.

``store`` defines the contract (streams with consumer groups, as Redis
Streams has them), ``sqlite_store`` and ``redis_store`` implement it for
``zmq://`` and ``zmq+redis://``, ``listener`` adapts it to oslo.messaging.
:func:`notification_store_for` picks the store for a driver.
"""

from __future__ import annotations

import logging
import os

from oslo_config import cfg

from zmqdriver.backends.etcd import EtcdBackend
from zmqdriver.backends.redis import RedisBackend
from zmqdriver.backends.sqlitefile import SQLiteFile, embedded_directory
from zmqdriver.notify.redis_store import RedisNotificationStore
from zmqdriver.notify.sqlite_store import SQLiteNotificationStore
from zmqdriver.notify.store import NotificationStore, Retention
from zmqdriver.options import GROUP

LOG = logging.getLogger(__name__)

EMBEDDED_FILE = "notifications.sqlite"


def notification_store_for(matchmaker: object, conf: cfg.ConfigOpts) -> NotificationStore:
    """The store for the notifications of a driver whose matchmaker is ``matchmaker``.

    Notifications live where discovery does: in the matchmaker's Redis when
    its ``backend`` is a RedisBackend, else in the embedded SQLite store of
    this host. ``matchmaker`` is whatever the entry point made: plugins need
    not subclass MatchMaker, so only its ``backend`` attribute is looked at.

    An EtcdBackend gets the embedded store by design, not by fallback: etcd
    keeps every write in its raft log and history until compaction, with a
    request size limit and a small total quota (2 GiB by default), so it is
    no place for a stream of notifications, and a second server (Redis) for
    them would defeat the point of using the etcd a cloud already runs.
    Notifications then reach listeners on the sender's host only
    (doc/deployment.md, "zmq+etcd://").
    """
    zconf = conf[GROUP]
    retention = Retention(
        zconf.zmq_notification_retention_count, zconf.zmq_notification_retention_age
    )
    redelivery = zconf.zmq_notification_redelivery
    backend = getattr(matchmaker, "backend", None)
    if isinstance(backend, RedisBackend):
        return RedisNotificationStore(backend, retention, redelivery)
    if isinstance(backend, EtcdBackend):
        LOG.info(
            "Notifications of this zmq+etcd:// transport use the embedded store of this "
            "host: listeners on other hosts do not see them (see doc/deployment.md)"
        )
    elif not isinstance(backend, SQLiteFile):
        _explain_embedded_fallback(matchmaker)
    path = os.path.join(embedded_directory(conf), EMBEDDED_FILE)
    return SQLiteNotificationStore(path, retention, redelivery)


def _explain_embedded_fallback(matchmaker: object) -> None:
    name = type(matchmaker).__name__
    if hasattr(matchmaker, "notification_store"):
        # Matchmaker contract 1 let a plugin make the store; contract 2 does not call it.
        LOG.warning(
            "Matchmaker %s defines notification_store(), which zmqdriver no longer calls "
            "(matchmaker contract 2): expose the connection as 'backend' instead; "
            "notifications use the embedded store of this host meanwhile",
            name,
        )
        return
    LOG.warning(
        "Matchmaker %s offers no backend for notifications: they use the embedded store "
        "of this host, so listeners on other hosts do not see them",
        name,
    )
