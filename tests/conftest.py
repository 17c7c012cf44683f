"""Shared fixtures; each family lives in its own module and is imported here."""

from tests.etcd_fixture import etcd_server, etcd_url  # noqa: F401 - pytest fixtures
from tests.redis_fixture import redis_server, redis_url  # noqa: F401 - pytest fixtures
from tests.sentinel_fixture import (  # noqa: F401 - pytest fixtures
    sentinel_cluster,
    sentinel_cluster_factory,
    sentinel_url,
)
from tests.tls_fixture import tls_files, tls_redis, tls_sentinels  # noqa: F401 - pytest fixtures
