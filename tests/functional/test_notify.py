"""Notifications through oslo.messaging's public API, listeners in other processes.

Every test runs on the embedded store (zmq://) and on Redis Streams.
"""

from __future__ import annotations

import logging

import oslo_messaging
import pytest

from harness.wait import eventually, wait_until
from tests.functional.helpers import ListenerProcess, send_notifications, unique


@pytest.fixture
def listeners(deployment):
    started: list[ListenerProcess] = []

    def start(topic: str, *options: str) -> ListenerProcess:
        listener = ListenerProcess(deployment.config_file, topic, *options)
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.kill()


@pytest.mark.parametrize("driver", ["messaging", "messagingv2"])
@pytest.mark.parametrize("mode", ["threading", "eventlet"])
def test_notification_reaches_a_listener(deployment, listeners, driver, mode):
    topic = unique("notify")
    listener = listeners(topic, "--mode", mode)
    send_notifications(deployment.config_file, topic, 3, driver=driver)
    wait_until(lambda: len(listener.handled()) == 3, what="3 notifications")
    assert sorted(listener.handled()) == [0, 1, 2]
    first = next(r for r in listener.records if r.get("n") == 0)  # handled concurrently
    assert (first["event_type"], first["publisher"]) == ("test.event", "sender")
    assert first["ctxt"]["user"] == "user-0", first  # the RequestContext travelled
    listener.stop()


def test_each_pool_gets_every_message_once_shared_within_the_pool(deployment, listeners):
    topic = unique("pools")
    pools = {
        name: [listeners(topic, "--pool", name) for _ in range(2)] for name in ("audit", "meter")
    }
    send_notifications(deployment.config_file, topic, 40)
    for name, members in pools.items():
        wait_until(lambda m=members: sum(len(x.handled()) for x in m) >= 40, what=f"pool {name}")
    for name, members in pools.items():
        got = [n for member in members for n in member.handled()]
        assert sorted(got) == list(range(40)), f"pool {name} got each message once"
        assert all(member.handled() for member in members), f"pool {name} shares the work"
    for members in pools.values():
        for member in members:
            member.stop()


def test_store_and_forward_to_a_listener_started_after_the_sender_exited(deployment, listeners):
    topic = unique("stored")
    send_notifications(deployment.config_file, topic, 1000)  # nobody listens yet
    listener = listeners(topic, "--workers", "1")  # one worker handles them as they arrive
    wait_until(lambda: len(listener.handled()) >= 1000, timeout=120, what="1000 notifications")
    assert listener.handled() == list(range(1000)), "all of them, in order"
    listener.stop()


def test_a_new_pool_starts_from_the_oldest_retained_notification(deployment, listeners):
    topic = unique("newpool")
    first = listeners(topic, "--pool", "early")
    send_notifications(deployment.config_file, topic, 5)
    wait_until(lambda: len(first.handled()) == 5, what="early pool")
    late = listeners(topic, "--pool", "late", "--workers", "1")
    wait_until(lambda: len(late.handled()) == 5, what="late pool")
    assert late.handled() == [0, 1, 2, 3, 4]
    first.stop()
    late.stop()


def test_requeued_notification_is_delivered_again(deployment, listeners):
    topic = unique("requeue")
    listener = listeners(topic, "--requeue-first")
    send_notifications(deployment.config_file, topic, 3)
    wait_until(lambda: sorted(listener.handled()) == [0, 1, 2], what="redelivery")
    assert sorted(r["requeued"] for r in listener.records if "requeued" in r) == [0, 1, 2]
    listener.stop()


def test_batch_listener_gets_batches(deployment, listeners):
    topic = unique("batch")
    send_notifications(deployment.config_file, topic, 25)
    listener = listeners(topic, "--batch-size", "10", "--batch-timeout", "1")

    def batches():
        got = [r["batch"] for r in list(listener.records) if "batch" in r]
        return got if sum(map(len, got)) == 25 else None

    got = wait_until(batches, what="25 notifications in batches")
    assert [n for batch in got for n in batch] == list(range(25))
    assert max(map(len, got)) == 10 and all(len(batch) <= 10 for batch in got)
    listener.stop()


def test_listener_killed_mid_stream_loses_nothing(tmp_path, deployment, listeners):
    # Short redelivery so the test does not wait the default 30 s.
    with open(deployment.config_file, "a") as handle:
        handle.write("zmq_notification_redelivery = 2\n")
    topic = unique("killed")
    send_notifications(deployment.config_file, topic, 200)
    # One at a time, 10 s for all: killed after 20, it still holds most of them.
    victim = listeners(topic, "--pool", "p", "--workers", "1", "--delay", "0.05")
    wait_until(lambda: len(victim.handled()) >= 20, what="the victim to be busy")
    victim.kill()  # SIGKILL with messages delivered to it and not acknowledged
    assert len(set(victim.handled())) < 200, "the victim finished before it was killed"
    survivor = listeners(topic, "--pool", "p")
    every = set(range(200))

    def missing() -> list[int]:
        return sorted(every - set(victim.handled()) - set(survivor.handled()))

    # The backlog moves at the pace of reads once redelivery (2 s) is due; a message
    # redelivered once a second would take minutes.
    eventually(lambda: not missing(), timeout=60)
    assert not missing(), (
        f"never handled by anyone: {missing()} (the survivor handled {len(survivor.handled())})"
    )
    survivor.stop()


def test_retention_drops_oldest_and_says_how_many(deployment, caplog):
    conf = deployment.conf(zmq_notification_retention_count=10)
    transport = oslo_messaging.get_notification_transport(conf)
    topic = unique("retention")
    try:
        notifier = oslo_messaging.Notifier(
            transport, publisher_id="p", driver="messagingv2", topics=[topic]
        )
        with caplog.at_level(logging.WARNING, logger="zmqdriver.driver"):
            for n in range(15):
                notifier.info({}, "test.event", {"n": n})
        dropped = [r for r in caplog.records if "retention dropped" in r.getMessage()]
        assert sum(r.args[0] for r in dropped) == 5, [r.getMessage() for r in dropped]
    finally:
        transport.cleanup()


def test_requeue_is_a_supported_feature(deployment):
    transport = oslo_messaging.get_notification_transport(deployment.conf())
    try:
        transport._require_driver_features(requeue=True)  # no NotImplementedError
    finally:
        transport.cleanup()
