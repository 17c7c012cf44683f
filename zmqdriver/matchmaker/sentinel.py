"""The Redis Sentinel matchmaker:
``zmq+sentinel://[user:password@]host1:26379[,host2:26379,...]/<service>[?db=N]``.

The Redis matchmaker (records, scripts, errors) on the master that Redis
Sentinel points to; the URL and the connection are
:mod:`zmqdriver.backends.sentinel`'s.
"""

from __future__ import annotations

from zmqdriver.backends.sentinel import SentinelBackend
from zmqdriver.matchmaker.redis import RedisMatchMaker


class SentinelMatchMaker(RedisMatchMaker):
    """The Redis matchmaker on the master that Redis Sentinel points to."""

    backend_class = SentinelBackend
