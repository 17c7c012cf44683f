"""RPC through zmq+sentinel:// while the Redis master fails over.

Servers and clients keep working without a restart: traffic continues while
Sentinel promotes the replica, and registrations land on the new master; clients'
subscription to changes (push) moves to the new master too.
"""

from __future__ import annotations

import os

import oslo_messaging

from harness.config import write_config
from harness.wait import wait_until
from tests.functional.conftest import Deployment
from tests.functional.helpers import client, make_conf, unique
from zmqdriver import addressing, matchmaker, options
from zmqdriver.matchmaker import MatchMaker, MatchMakerUnavailable

ONE = addressing.encode_record(addressing.Endpoint("127.0.0.1", 1))
TWO = addressing.encode_record(addressing.Endpoint("127.0.0.1", 2))


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


def test_push_follows_the_master_through_a_failover(sentinel_cluster_factory, tmp_path):
    cluster = sentinel_cluster_factory()
    prefix = unique("sentinel")
    conf = make_conf(write_config(os.path.join(tmp_path, "zmq.conf"), cluster.url))
    options.register(conf)
    conf.set_override("zmq_matchmaker_prefix", prefix, group=options.GROUP)
    mm = matchmaker.load(conf, oslo_messaging.TransportURL.parse(conf, cluster.url))
    changes: list[str | None] = []
    watch = mm.watch(f"{prefix}/rpc/", changes.append)
    key = f"{prefix}/rpc/openstack/t"
    try:
        wait_until(lambda: watch.up, timeout=30, what="the subscription on the master")
        mm.register(key, ONE, 60)
        wait_until(lambda: key in changes, timeout=10, what="a change pushed")

        cluster.kill_master()
        cluster.wait_for_promotion()
        # Subscribed again on the promoted master: a resync, then changes as before.
        wait_until(lambda: watch.up and changes.count(None) >= 2, timeout=60, what="a resync")
        changes.clear()
        wait_until(lambda: registered(mm, key, TWO), timeout=60, what="a registration")
        wait_until(lambda: key in changes, timeout=10, what="a change pushed by the new master")
    finally:
        watch.stop()
        mm.close()


def registered(mm: MatchMaker, key: str, record: str) -> bool:
    """Whether ``register`` went through (the new master may still be settling)."""
    try:
        mm.register(key, record, 60)
    except MatchMakerUnavailable:
        return False
    return True
