"""What the push tests of every matchmaker share (tests/functional/test_*_push.py).

Clients cache lookups for a minute here (zmq_target_cache_ttl = 60), so only the push
can make one use a server that started after its first lookup within seconds; with
zmq_matchmaker_watch = false the same client keeps its cached answer.
"""

from __future__ import annotations

import os

from harness.config import write_config
from harness.wait import wait_until
from tests.functional.conftest import Deployment
from tests.functional.helpers import client, unique

CACHE_TTL = 60  # longer than any wait of the tests: only a push explains a change seen


def deployment(kind: str, url: str, tmp_path, watch: bool, **options: object) -> Deployment:
    """A deployment on ``url`` whose clients cache for CACHE_TTL, push on or off."""
    config_file = write_config(
        os.path.join(tmp_path, "zmq.conf"),
        url,
        zmq_matchmaker_prefix=unique("push"),
        zmq_target_cache_ttl=CACHE_TTL,
        zmq_matchmaker_watch=watch,
        **options,
    )
    return Deployment(kind, url, config_file, str(tmp_path))


def check_a_server_that_starts_later_gets_calls(deploy: Deployment, watch: bool) -> None:
    """With push a client's calls reach a new server within seconds; without, they do not."""
    topic = unique("push")
    first = deploy.server(topic, "first")
    transport = deploy.transport()
    second = None
    try:
        caller = client(transport, topic, timeout=30)
        assert caller.call({}, "whoami") == "first"  # cached for a minute from here
        second = deploy.server(topic, "second")
        if watch:
            wait_until(
                lambda: caller.call({}, "whoami") == "second",
                timeout=10,
                what="a call answered by the new server",
            )
        else:
            answers = {caller.call({}, "whoami") for _ in range(50)}
            assert answers == {"first"}  # the cached answer, until its minute is up
    finally:
        transport.cleanup()
        first.stop()
        if second is not None:
            second.stop()
