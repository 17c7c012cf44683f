"""This session's private ``redis-server`` (harness/redis_server.py), as pytest fixtures.

Tests never touch a shared Redis (such as 127.0.0.1:6379): the session starts its own
server in a temporary directory and kills it by PID at the end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """This session's own redis-server; see the module docstring."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's Redis, running and emptied (FLUSHALL) for this test."""
    # A previous test may have stopped it to simulate an outage.
    redis_server.start()
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url
