"""Backends: the shared connections to where zmqdriver keeps its state.

A backend is a connection and nothing more: ``redis.RedisBackend`` (one or
more Redis hosts, or through ``sentinel.SentinelBackend`` the master that
Redis Sentinel names), ``etcd.EtcdBackend`` (the members of an etcd cluster)
and ``sqlitefile.SQLiteFile`` (the embedded files of ``zmq://``). Discovery
(``zmqdriver.matchmaker``) and the notification store (``zmqdriver.notify``)
are two users of a backend; neither imports the other.
"""

from __future__ import annotations

from zmqdriver.backends.etcd import EtcdBackend
from zmqdriver.backends.redis import RedisBackend
from zmqdriver.backends.sqlitefile import SQLiteFile

# What a matchmaker may expose as its ``backend`` for the notification store to share.
Backend = RedisBackend | EtcdBackend | SQLiteFile

__all__ = ["Backend", "EtcdBackend", "RedisBackend", "SQLiteFile"]
