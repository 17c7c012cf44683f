"""Pytest fixtures of private Redis Sentinel deployments (harness/sentinel.py).

``sentinel_cluster`` is one healthy deployment for the session; tests that
break theirs (failover) or need other settings (passwords) get their own from
``sentinel_cluster_factory``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from harness.sentinel import SERVICE, SentinelCluster

__all__ = ["SERVICE", "SentinelCluster", "sentinel_cluster", "sentinel_cluster_factory"]


@pytest.fixture(scope="session")
def sentinel_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelCluster]:
    """This session's healthy Sentinel deployment; tests must not break it."""
    cluster = SentinelCluster(tmp_path_factory.mktemp("sentinel"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def sentinel_cluster_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., SentinelCluster]]:
    """Start private clusters (``SentinelCluster`` arguments); killed at the test's end."""
    clusters: list[SentinelCluster] = []

    def start(**kwargs) -> SentinelCluster:
        cluster = SentinelCluster(tmp_path_factory.mktemp("sentinel-private"), **kwargs)
        clusters.append(cluster)
        cluster.start()
        return cluster

    try:
        yield start
    finally:
        for cluster in clusters:
            cluster.stop()


@pytest.fixture
def sentinel_url(sentinel_cluster: SentinelCluster) -> str:
    """URL of the session's Sentinel deployment, its master emptied (FLUSHALL) for this test."""
    with sentinel_cluster.current_master().client() as client:
        client.flushall()
    return sentinel_cluster.url
