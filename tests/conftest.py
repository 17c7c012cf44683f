"""Shared fixtures; each family lives in its own module and is imported here."""

from tests.redis_fixture import redis_server, redis_url  # noqa: F401 - pytest fixtures
