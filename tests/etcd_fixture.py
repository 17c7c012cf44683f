"""This session's private etcd member (harness/etcd_server.py), as pytest fixtures.

Tests never touch a shared etcd (such as 127.0.0.1:2379): the session starts its own
member on free ports with a temporary data directory and kills it by PID at the end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.etcd_server import EtcdServer


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """This session's own etcd member; see the module docstring."""
    pytest.importorskip("etcd3gw", reason="zmq+etcd:// needs etcd3gw (pip install etcd3gw)")
    server = EtcdServer(tmp_path_factory.mktemp("etcd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def etcd_url(etcd_server: EtcdServer) -> str:
    """URL of the session's etcd, running and emptied (every key deleted) for this test."""
    # A previous test may have stopped it to simulate an outage.
    etcd_server.start()
    etcd_server.client().delete("\0", range_end="\0")
    return etcd_server.url
