"""Push discovery on Redis end to end: registrations publish, clients subscribe.

Clients cache lookups for a minute here (tests/functional/push.py), so only the push can
make one use a server that started after its first lookup, or drop one that stopped,
within seconds; with zmq_matchmaker_watch = false the same client keeps its cached answer.
A record that expires (its server was killed) is pushed by nobody: a pushed answer is
kept only until its first record expires. When the subscription drops, clients poll until
it is back, then read their keys again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import oslo_messaging
import pytest

from harness.redis_server import RedisServer
from harness.wait import wait_until
from tests.functional.conftest import Deployment
from tests.functional.helpers import unique
from tests.functional.push import (
    CACHE_TTL,
    check_a_server_that_starts_later_gets_calls,
    deployment,
)
from zmqdriver import addressing, matchmaker
from zmqdriver.discovery import Directory
from zmqdriver.matchmaker import redis as redis_matchmaker_module
from zmqdriver.matchmaker.base import MatchMaker

pytestmark = pytest.mark.timeout(120)

ONE = addressing.encode_record(addressing.Endpoint("127.0.0.1", 1))
TWO = addressing.encode_record(addressing.Endpoint("127.0.0.1", 2))


@pytest.fixture
def redis_matchmaker(redis_url: str, tmp_path) -> Iterator[tuple[Deployment, MatchMaker]]:
    """A deployment with push on, and a matchmaker of the test's own on its Redis."""
    deploy = deployment(
        "redis", redis_url, tmp_path, True, zmq_target_expire=3, zmq_target_update=1
    )
    conf = deploy.conf()
    mm = matchmaker.load(conf, oslo_messaging.TransportURL.parse(conf, redis_url))
    try:
        yield deploy, mm
    finally:
        mm.close()


def prefix_of(deploy: Deployment) -> str:
    return deploy.conf().oslo_messaging_zmq.zmq_matchmaker_prefix


@pytest.mark.parametrize("watch", [True, False], ids=["push", "poll"])
def test_a_server_that_starts_later_gets_calls(redis_url, tmp_path, watch):
    check_a_server_that_starts_later_gets_calls(
        deployment("redis", redis_url, tmp_path, watch), watch
    )


def test_a_stopped_server_and_a_killed_one_are_dropped_without_the_ttl(redis_matchmaker):
    deploy, mm = redis_matchmaker
    prefix = prefix_of(deploy)
    topic = unique("push")
    key = addressing.rpc_key(prefix, addressing.DEFAULT_EXCHANGE, topic)
    directory = Directory(mm, CACHE_TTL, watch_prefix=f"{prefix}/rpc/")
    servers = [deploy.server(topic, name) for name in ("first", "second", "victim")]
    try:
        wait_until(lambda: len(directory.endpoints(key)) == 3, timeout=10, what="three servers")
        servers[1].stop()  # unregisters: the script that deletes the record publishes
        wait_until(lambda: len(directory.endpoints(key)) == 2, timeout=10, what="stop seen")
        servers[2].kill()  # nobody unregisters: its record expires (zmq_target_expire = 3)
        wait_until(lambda: len(directory.endpoints(key)) == 1, timeout=10, what="expiry seen")
    finally:
        directory.close()
        servers[2].kill()
        servers[0].stop()


def test_a_dropped_subscription_falls_back_to_polling_and_recovers(
    redis_matchmaker, redis_server: RedisServer
):
    deploy, mm = redis_matchmaker
    prefix = prefix_of(deploy)
    changes: list[str | None] = []
    watch = mm.watch(f"{prefix}/rpc/", changes.append)
    key = f"{prefix}/rpc/openstack/t"
    polling = Directory(mm, ttl=0.2, watch_prefix=f"{prefix}/rpc/")
    admin = redis_server.client(decode_responses=True)
    try:
        wait_until(lambda: watch.up, timeout=10, what="the subscription")
        # Killed: redis-py subscribes again at once, which is a resync (messages were lost).
        admin.client_kill_filter(_type="pubsub")
        wait_until(lambda: changes.count(None) >= 2, timeout=10, what="a resync")
        mm.register(key, ONE, 60)
        wait_until(lambda: key in changes, timeout=10, what="a change pushed after the resync")

        # Killed and refused: the watch is down, clients poll.
        admin.execute_command("ACL", "SETUSER", "default", "-subscribe")
        admin.client_kill_filter(_type="pubsub")
        wait_until(lambda: not watch.up, timeout=10, what="the subscription down")
        mm.register(key, TWO, 60)
        wait_until(lambda: len(polling.endpoints(key)) == 2, timeout=10, what="a poll")
        assert not watch.up

        admin.execute_command("ACL", "SETUSER", "default", "+subscribe")
        wait_until(lambda: watch.up, timeout=30, what="the subscription back")
        resyncs = changes.count(None)
        mm.unregister(key, ONE)
        wait_until(lambda: changes[-1] == key, timeout=10, what="a change pushed again")
        assert changes.count(None) == resyncs
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "+subscribe")
        admin.close()
        polling.close()
        watch.stop()


def test_a_refused_notice_does_not_fail_the_registration(redis_matchmaker, redis_server, caplog):
    deploy, mm = redis_matchmaker
    key = f"{prefix_of(deploy)}/rpc/openstack/t"
    admin = redis_server.client(decode_responses=True)
    try:
        admin.execute_command("ACL", "SETUSER", "default", "resetchannels")  # no PUBLISH
        with caplog.at_level(logging.WARNING, logger=redis_matchmaker_module.LOG.name):
            mm.register(key, ONE, 60)
            mm.unregister(key, ONE)
        assert mm.lookup(key) == []
        warnings = [r for r in caplog.records if "refused to publish" in r.getMessage()]
        assert len(warnings) == 1  # once per process, not per registration
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "allchannels")
        admin.close()


def test_a_silent_subscription_is_pinged_and_reopened(
    redis_url, redis_server, tmp_path, monkeypatch
):
    monkeypatch.setattr(redis_matchmaker_module, "PING_AFTER", 0.5)
    deploy = deployment("redis", redis_url, tmp_path, True, zmq_matchmaker_timeout=1)
    conf = deploy.conf()
    mm = matchmaker.load(conf, oslo_messaging.TransportURL.parse(conf, redis_url))
    watch = mm.watch(f"{prefix_of(deploy)}/rpc/", lambda key: None)
    admin = redis_server.client()
    try:
        wait_until(lambda: watch.up, timeout=10, what="the subscription")
        # Redis answers nobody for a while: the connection is open but says nothing.
        admin.execute_command("CLIENT", "PAUSE", 5000, "ALL")
        wait_until(lambda: not watch.up, timeout=10, what="the unanswered PING noticed")
        wait_until(lambda: watch.up, timeout=30, what="the subscription back")
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()
        watch.stop()
        mm.close()
