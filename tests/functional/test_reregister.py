"""Servers register again after Redis lost their records, each in its turn.

Redis flushed, or restarted empty: every server process notices (restarted: its
subscription to the changes channel comes back up and it reads the generation token;
flushed: its next refresh, or the generation read every 30 s) and registers again after
a random delay below ``zmq_reregister_spread``; in the end exactly the records of before
are back, under the shared key and each server's own, and each server answers its
directed calls. No timing is asserted: the spread's effect on Redis's load is measured
by the scale harness (doc/scaling.md).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from harness.config import write_config
from harness.redis_server import RedisServer
from harness.wait import wait_until
from tests.functional.conftest import Deployment
from tests.functional.helpers import ServerProcess, client, unique
from zmqdriver.addressing import DEFAULT_EXCHANGE, rpc_key
from zmqdriver.matchmaker.redis import changes_channel

pytestmark = pytest.mark.timeout(180)

SERVERS = ("s1", "s2", "s3", "s4")
SPREAD = 2.0  # as the default; long enough that the four do not all register together


def flush(redis: RedisServer) -> None:
    with redis.client() as connection:
        connection.flushall()


def restart_empty(redis: RedisServer) -> None:
    redis.stop(signal.SIGKILL)
    redis.start()  # no persistence: it comes back empty


def records(redis: RedisServer, key: str) -> set[bytes]:
    with redis.client() as connection:
        return set(connection.zrange(key, 0, -1))


@pytest.mark.parametrize("lose", [flush, restart_empty], ids=["flush", "restart"])
def test_every_server_registers_again_after_redis_lost_the_records(
    redis_url: str, redis_server: RedisServer, tmp_path, lose: Callable[[RedisServer], None]
):
    prefix = unique("reregister")
    config = write_config(
        os.path.join(tmp_path, "zmq.conf"),
        redis_url,
        zmq_matchmaker_prefix=prefix,
        zmq_reregister_spread=SPREAD,
    )
    deploy = Deployment("redis", redis_url, config, str(tmp_path))
    topic = unique("reregister")
    keys = [rpc_key(prefix, DEFAULT_EXCHANGE, topic)]
    keys += [rpc_key(prefix, DEFAULT_EXCHANGE, topic, name) for name in SERVERS]
    servers: list[ServerProcess] = []
    try:
        servers += [deploy.server(topic, name) for name in SERVERS]
        before = {key: records(redis_server, key) for key in keys}
        assert len(before[keys[0]]) == len(SERVERS)
        lose(redis_server)
        assert not records(redis_server, keys[0])
        wait_until(
            lambda: {key: records(redis_server, key) for key in keys} == before,
            timeout=60,
            what="every server registered again, under every key",
        )
        answers_its_calls(deploy, topic)
    finally:
        for server in servers:
            server.stop()


def answers_its_calls(deploy: Deployment, topic: str, servers: tuple[str, ...] = SERVERS) -> None:
    transport = deploy.transport()
    try:
        for name in servers:
            assert client(transport, topic, server=name, timeout=30).call({}, "whoami") == name
    finally:
        transport.cleanup()


def subscribers(redis: RedisServer, channel: str) -> int:
    with redis.client() as connection:
        return dict(connection.pubsub_numsub(channel))[channel.encode()]


def generation_reads(redis: RedisServer) -> int:
    """GETs Redis ran so far: only the generation script reads a key with GET."""
    with redis.client() as connection:
        return connection.info("commandstats").get("cmdstat_get", {}).get("calls", 0)


def test_an_idle_server_reads_the_generation_when_its_channel_comes_back_only(
    redis_url: str, redis_server: RedisServer, tmp_path
):
    """Not once a second (10,000 GETs/s at 10,000 hosts): the restart breaks its channel."""
    prefix = unique("pushgen")
    config = write_config(
        os.path.join(tmp_path, "zmq.conf"), redis_url, zmq_matchmaker_prefix=prefix
    )
    deploy = Deployment("redis", redis_url, config, str(tmp_path))
    topic = unique("pushgen")
    key = rpc_key(prefix, DEFAULT_EXCHANGE, topic, "s1")
    server = deploy.server(topic, "s1")  # serves only: no lookup opens a watch for it
    try:
        channel = changes_channel(prefix)
        wait_until(lambda: subscribers(redis_server, channel) == 1, timeout=30, what="a watch")
        time.sleep(2.0)  # its first reads: at the registrar's first tick, and the channel's
        before = generation_reads(redis_server)
        time.sleep(5.0)  # polled every second, it read five times
        assert generation_reads(redis_server) - before <= 1
        registered = records(redis_server, key)
        restart_empty(redis_server)
        wait_until(
            lambda: records(redis_server, key) == registered, timeout=60, what="registered again"
        )
        assert generation_reads(redis_server) >= 1
        answers_its_calls(deploy, topic, ("s1",))
    finally:
        server.stop()
