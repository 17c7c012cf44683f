"""The fault tests use the same deployments as the functional tests."""

from tests.functional.conftest import deployment, redis_deployment  # noqa: F401
