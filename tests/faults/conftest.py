"""The fault tests use the same deployments as the functional tests."""

from tests.functional.conftest import (  # noqa: F401 - pytest fixtures
    deployment,
    etcd_deployment,
    redis_deployment,
)
