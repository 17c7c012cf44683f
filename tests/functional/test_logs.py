"""What the driver says in its logs about servers coming, going and dying.

Operators have no broker to look into: the log lines are their view. These
tests pin the lines a runbook (doc/operations.md) quotes, and that a dead
server is reported once, not once per attempt.
"""

from __future__ import annotations

import logging

import oslo_messaging
import pytest

from tests.functional.helpers import client, unique

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("warm", [False, True], ids=["new-client", "connected-client"])
def test_a_call_to_a_killed_servers_live_record_logs_at_most_one_warning(
    redis_deployment, caplog, warm
):
    # Redis keeps the killed server's record until it expires (zmq_target_expire),
    # so every attempt of the call finds it and fails on it again.
    topic = unique("killed")
    server = redis_deployment.server(topic, "k1")
    transport = redis_deployment.transport()
    try:
        if warm:
            assert client(transport, topic, timeout=30).call({}, "echo", value=1) == 1
        server.kill()
        with caplog.at_level(logging.DEBUG, logger="zmqdriver"):
            with pytest.raises(oslo_messaging.MessagingTimeout) as raised:
                client(transport, topic, timeout=5).call({}, "echo", value=2)
        assert f"topic={topic!r}" in str(raised.value)
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith("zmqdriver")
        ]
        assert len(warnings) <= 1, "\n".join(warnings)
        # The attempts happened (and were said at DEBUG): the quiet is throttling.
        assert any(r.levelno == logging.DEBUG for r in caplog.records)
    finally:
        transport.cleanup()
        server.kill()
