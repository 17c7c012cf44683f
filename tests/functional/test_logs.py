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


class _Endpoint:
    def echo(self, ctxt, value):
        return value


def _server(transport, topic: str):
    target = oslo_messaging.Target(topic=topic, server="s1")
    return oslo_messaging.get_rpc_server(transport, target, [_Endpoint()], executor="threading")


def _info(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO and r.name.startswith("zmqdriver")
    ]


def test_a_server_says_where_it_bound_what_it_published_and_when_it_left(deployment, caplog):
    topic = unique("said")
    transport = deployment.transport()
    try:
        with caplog.at_level(logging.INFO, logger="zmqdriver"):
            server = _server(transport, topic)
            server.start()
            assert client(transport, topic, timeout=30).call({}, "echo", value=1) == 1
            server.stop()
            server.wait()
    finally:
        transport.cleanup()
    said = _info(caplog)
    bound = [line for line in said if line.startswith("RPC server for ")]
    assert len(bound) == 1, said
    assert f"topic={topic!r}" in bound[0] and "exchange 'openstack'" in bound[0]
    bind = "127.0.0.1" if deployment.kind == "zmq" else "*"
    assert f" on {bind};" in bound[0]
    published = [line for line in said if "published" in line]
    assert len(published) == 1 and f"/rpc/openstack/{topic}/s1" in published[0]
    assert any(line.startswith("zmqdriver: unregistered tcp://") for line in said), said


def test_publishing_a_name_that_resolves_to_loopback_while_binding_everywhere_warns(
    redis_deployment, caplog
):
    topic = unique("trap")
    conf = redis_deployment.conf(rpc_zmq_host="localhost", rpc_zmq_bind_address="*")
    transport = redis_deployment.transport(conf)
    try:
        with caplog.at_level(logging.WARNING, logger="zmqdriver.driver"):
            server = _server(transport, topic)
            server.start()
            server.stop()
            server.wait()
    finally:
        transport.cleanup()
    warnings = [r.getMessage() for r in caplog.records if "loopback" in r.getMessage()]
    assert len(warnings) == 1
    assert "rpc_zmq_host 'localhost'" in warnings[0] and "rpc_zmq_bind_address='*'" in warnings[0]
