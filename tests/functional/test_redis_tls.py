"""The matchmaker over TLS, end to end: servers and listeners in other processes.

The Redis and Sentinel deployments serve TLS only and require client
certificates (tests/tls_fixture.py); the Redis one knows a single ACL user.
Every process reads the TLS files from its config file, as a service would.
"""

from __future__ import annotations

import os

import oslo_messaging
import pytest

from harness import config
from harness.wait import wait_until
from tests.functional import helpers
from tests.functional.helpers import ListenerProcess, client, send_notifications, unique
from tests.tls_fixture import ACL_PASSWORD, ACL_USER

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(params=["redis", "sentinel"])
def tls_url(request) -> str:
    """A transport URL, with the credentials it needs, of a TLS-only deployment."""
    if request.param == "redis":
        server = request.getfixturevalue("tls_redis")
        return f"zmq+redis://{ACL_USER}:{ACL_PASSWORD}@{server.host}:{server.port}/0"
    return request.getfixturevalue("tls_sentinels").url


def write_config(tmp_path, url: str, name: str = "zmq", **zmq_options) -> str:
    """A config file for ``url``: its own key prefix, plus ``zmq_options`` (the TLS files)."""
    path = os.path.join(tmp_path, f"{name}.conf")
    return config.write_config(path, url, zmq_matchmaker_prefix=unique("tls"), **zmq_options)


def rpc_client(config_file: str, topic: str, timeout: float = 30):
    conf = helpers.make_conf(config_file)
    transport = oslo_messaging.get_rpc_transport(conf)
    return transport, client(transport, topic, timeout=timeout)


def test_rpc_round_trip(tls_url, tls_files, tmp_path):
    config_file = write_config(tmp_path, tls_url, **tls_files.driver_options())
    topic = unique("tls-rpc")
    server = helpers.ServerProcess(config_file, topic, "tls-server")
    transport, rpc = rpc_client(config_file, topic)
    try:
        assert rpc.call({}, "echo", value="over tls") == "over tls"
        assert rpc.call({}, "whoami") == "tls-server"
    finally:
        transport.cleanup()
        server.stop()


def test_notifications(tls_url, tls_files, tmp_path):
    config_file = write_config(tmp_path, tls_url, **tls_files.driver_options())
    topic = unique("tls-notify")
    send_notifications(config_file, topic, 3)  # stored before any listener runs
    listener = ListenerProcess(config_file, topic)
    try:
        wait_until(lambda: len(listener.handled()) == 3, what="3 notifications over TLS")
        assert sorted(listener.handled()) == [0, 1, 2]
    finally:
        listener.stop()


def test_tls_switched_on_by_the_url(tls_redis, tls_files, tmp_path):
    url = f"zmq+redis://{ACL_USER}:{ACL_PASSWORD}@{tls_redis.host}:{tls_redis.port}/0?tls=true"
    options = tls_files.driver_options()
    del options["zmq_redis_tls_enabled"]
    config_file = write_config(tmp_path, url, **options)
    topic = unique("tls-url")
    server = helpers.ServerProcess(config_file, topic, "url-server")
    transport, rpc = rpc_client(config_file, topic)
    try:
        assert rpc.call({}, "whoami") == "url-server"
    finally:
        transport.cleanup()
        server.stop()


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("zmq_redis_tls_ca_file", "certificate.*zmq_redis_tls_ca_file must name the CA"),
        ("zmq_redis_tls_enabled", "accepts TLS only, set zmq_redis_tls_enabled"),
    ],
)
def test_misconfigured_client_is_told_why(tls_url, tls_files, tmp_path, missing, message):
    server_config = write_config(tmp_path, tls_url, **tls_files.driver_options())
    topic = unique("tls-bad")
    server = helpers.ServerProcess(server_config, topic, "tls-server")
    options = tls_files.driver_options()
    if missing == "zmq_redis_tls_enabled":
        options = {}  # no TLS at all: the files alone would be refused as contradictory
    else:
        del options[missing]
    transport, rpc = rpc_client(write_config(tmp_path, tls_url, "client", **options), topic, 3)
    try:
        # A refused certificate fails at once; a plain client on a TLS port waits for its
        # timeout (it looks like an outage) and then says why.
        with pytest.raises(oslo_messaging.MessagingException, match=message):
            rpc.call({}, "whoami")
    finally:
        transport.cleanup()
        server.stop()


def test_wrong_password_is_reported_at_start(tls_redis, tls_files, tmp_path, caplog):
    url = f"zmq+redis://{ACL_USER}:wrong-pw@{tls_redis.host}:{tls_redis.port}/0"
    config_file = write_config(tmp_path, url, **tls_files.driver_options())
    problem = f"Redis matchmaker at {tls_redis.host}:{tls_redis.port} rejected the credentials of "
    problem += f"user '{ACL_USER}'"
    log = os.path.join(tmp_path, "server.log")
    # Retrying cannot fix a wrong password: the server's start fails, saying why.
    with pytest.raises(AssertionError, match="did not start"):
        helpers.ServerProcess(config_file, unique("tls-auth"), "server", log_file=log)
    text = open(log).read()
    assert problem in text and "wrong-pw" not in text, text
    # A client is told at once, not at its timeout.
    transport, rpc = rpc_client(config_file, "anything", timeout=30)
    try:
        with pytest.raises(oslo_messaging.MessagingException, match=problem) as info:
            rpc.call({}, "whoami")
        assert not isinstance(info.value, oslo_messaging.MessagingTimeout)
        notifier = oslo_messaging.Notifier(
            oslo_messaging.get_notification_transport(helpers.make_conf(config_file)),
            "sender",
            driver="messagingv2",
            topics=[unique("tls-auth")],
            retry=0,
        )
        notifier.info({}, "test.event", {})  # oslo's Notifier logs failures, never raises
        assert problem in caplog.text
    finally:
        transport.cleanup()
