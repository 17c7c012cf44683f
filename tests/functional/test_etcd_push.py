"""Push discovery end to end: with etcd's watch, a client sees a new server at once.

The client's cache lasts a minute here (zmq_target_cache_ttl = 60), so only the push
can make it use a server that started after its first lookup within seconds; with
zmq_matchmaker_watch = false the same client keeps its cached answer.
"""

from __future__ import annotations

import os
import time

import pytest

from harness.config import write_config
from harness.wait import wait_until
from tests.functional.conftest import Deployment
from tests.functional.helpers import client, unique

pytest.importorskip("etcd3gw")

pytestmark = pytest.mark.timeout(120)


def deployment(etcd_url: str, tmp_path, watch: bool) -> Deployment:
    config_file = write_config(
        os.path.join(tmp_path, "zmq.conf"),
        etcd_url,
        zmq_matchmaker_prefix=unique("push"),
        zmq_target_cache_ttl=60,
        zmq_matchmaker_watch=watch,
    )
    return Deployment("etcd", etcd_url, config_file, str(tmp_path))


@pytest.mark.parametrize("watch", [True, False], ids=["push", "poll"])
def test_a_server_that_starts_later_gets_calls(etcd_url, tmp_path, watch):
    deploy = deployment(etcd_url, tmp_path, watch)
    topic = unique("push")
    first = deploy.server(topic, "first")
    transport = deploy.transport()
    second = None
    try:
        caller = client(transport, topic, timeout=30)
        assert caller.call({}, "whoami") == "first"  # cached for a minute from here
        second = deploy.server(topic, "second")
        started = time.monotonic()
        if watch:
            wait_until(
                lambda: caller.call({}, "whoami") == "second",
                timeout=10,
                what="a call answered by the new server",
            )
            assert time.monotonic() - started < 10
        else:
            answers = {caller.call({}, "whoami") for _ in range(50)}
            assert answers == {"first"}  # the cached answer, until its minute is up
    finally:
        transport.cleanup()
        first.stop()
        if second is not None:
            second.stop()
