"""RPC through zmq+sentinel:// while the Redis master fails over.

Servers and clients keep working without a restart: traffic continues while
Sentinel promotes the replica, and registrations land on the new master.
"""

from __future__ import annotations

import os

from harness.config import write_config
from harness.wait import wait_until
from tests.functional.conftest import Deployment
from tests.functional.helpers import client, unique


def test_rpc_continues_through_a_sentinel_failover(sentinel_cluster_factory, tmp_path):
    cluster = sentinel_cluster_factory()
    config_file = write_config(
        os.path.join(tmp_path, "zmq.conf"),
        cluster.url,
        zmq_matchmaker_prefix=unique("sentinel"),
        # Refresh often so the test sees registrations reach the new master soon.
        zmq_target_update=2,
        zmq_target_expire=10,
    )
    deployment = Deployment("sentinel", cluster.url, config_file, str(tmp_path))
    topic = unique("failover")
    servers = [deployment.server(topic, "s1"), deployment.server(topic, "s2")]
    transport = deployment.transport()
    try:
        caller = client(transport, topic, timeout=60)
        assert {caller.call({}, "whoami") for _ in range(6)} == {"s1", "s2"}

        cluster.kill_master()
        # During the failover the client keeps the servers it knows.
        assert {caller.call({}, "whoami") for _ in range(6)} == {"s1", "s2"}
        new_master = cluster.wait_for_promotion()

        # The servers' records are on the new master again without any restart...
        with new_master.client() as redis_client:
            wait_until(
                lambda: len(redis_client.keys(f"*{topic}*")) >= 3,
                timeout=60,
                what="registrations on the new master",
            )
        # ...so a client that never saw the old master finds both servers.
        fresh = deployment.transport()
        try:
            late = client(fresh, topic, timeout=60)
            assert {late.call({}, "whoami") for _ in range(6)} == {"s1", "s2"}
        finally:
            fresh.cleanup()
    finally:
        transport.cleanup()
        for server in servers:
            server.stop()
