"""Moving a running deployment from RabbitMQ to zmqdriver and back, as doc/operations.md says.

Real processes on both transports: RPC servers (rpc_server_proc, journaling every cast),
notification senders and listeners. Each step asserts that nothing sent was lost:

* RPC: peers on different transports cannot talk, so the servers and clients of a topic switch
  together: the clients stop sending, the old servers finish what they took (a graceful stop),
  the new servers start, the clients come back on the new transport;
* notifications move on their own through ``[oslo_messaging_notifications] transport_url``
  while RPC stays on RabbitMQ: senders first (the new transport keeps what they send until a
  listener comes), then listeners, once they have drained the old transport.

RabbitMQ is the local broker (``ZMQDRIVER_RABBIT_URL``, default guest/guest on 127.0.0.1:5672),
started for these tests if it is installed and down (test.sh installs it). If none answers the
test fails and says so, unless ``ZMQDRIVER_TESTS_WITHOUT_RABBIT=1`` explicitly opts out (then it
is skipped, visibly).
"""

from __future__ import annotations

import os

import oslo_messaging
import pytest

from bench.procs import RabbitMQ, delete_rabbit_queues
from harness.wait import wait_until
from tests.functional import helpers
from tests.functional.helpers import client, unique

pytestmark = pytest.mark.timeout(300)

RABBIT_URL = os.environ.get("ZMQDRIVER_RABBIT_URL", "rabbit://guest:guest@127.0.0.1:5672/")
OPT_OUT = "ZMQDRIVER_TESTS_WITHOUT_RABBIT"
BATCH = 20


@pytest.fixture(scope="module")
def rabbit_url():
    """The broker at RABBIT_URL; the local one is started (and stopped after) if it is down."""
    broker = RabbitMQ(RABBIT_URL)
    why = broker.ensure()
    if why is None:
        yield RABBIT_URL
        broker.stop_if_started()
        return
    if os.environ.get(OPT_OUT) == "1":
        pytest.skip(f"{why}; {OPT_OUT}=1 opts out of the RabbitMQ migration tests")
    pytest.fail(
        f"{why}: install rabbitmq-server (test.sh does), point ZMQDRIVER_RABBIT_URL at a "
        f"broker, or set {OPT_OUT}=1 to skip these tests on purpose"
    )


def _config(deployment, name: str, rpc_url: str, notifications_url: str | None = None) -> str:
    """The deployment's config file with another ``[DEFAULT] transport_url``.

    ``notifications_url`` goes to ``[oslo_messaging_notifications] transport_url``: where
    notifications travel when it differs from RPC's transport.
    """
    with open(deployment.config_file) as handle:
        lines = handle.read().splitlines()
    lines = [
        f"transport_url = {rpc_url}" if line.startswith("transport_url") else line for line in lines
    ]
    if notifications_url is not None:
        lines += ["", "[oslo_messaging_notifications]", f"transport_url = {notifications_url}"]
    path = os.path.join(deployment.tmpdir, f"{name}.conf")
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


class RpcService:
    """One topic's servers and clients, switched together from one transport to another."""

    def __init__(self, deployment, journal: str) -> None:
        self.deployment = deployment
        self.topic = unique("migrate")
        self.journal = journal
        self.server: helpers.ServerProcess | None = None

    def start_server(self, config_file: str, name: str) -> None:
        self.server = helpers.ServerProcess(config_file, self.topic, name, journal=self.journal)

    def stop_server(self) -> None:
        # Graceful: a RabbitMQ server takes what is queued for it, a zmq one unregisters and
        # finishes what it accepted.
        if self.server is not None:
            self.server.stop()
            self.server = None

    def send(self, config_file: str, prefix: str) -> list[str]:
        """Casts and calls from a client on ``config_file``'s transport; returns the tags."""
        transport = oslo_messaging.get_rpc_transport(helpers.make_conf(config_file))
        tags = [f"{prefix}-{n}" for n in range(BATCH)]
        try:
            rpc = client(transport, self.topic, timeout=60)
            for tag in tags[: BATCH // 2]:
                rpc.cast({}, "record", tag=tag)
            for tag in tags[BATCH // 2 :]:
                assert rpc.call({}, "record", tag=tag) is None
        finally:
            transport.cleanup()  # as a service stopping to switch
        return tags

    def cannot_reach(self, config_file: str) -> None:
        """A client on the other transport finds nobody: the reason peers switch together."""
        transport = oslo_messaging.get_rpc_transport(helpers.make_conf(config_file))
        try:
            with pytest.raises(oslo_messaging.MessagingTimeout):
                client(transport, self.topic, timeout=2).call({}, "echo", value=1)
        finally:
            transport.cleanup()

    def journaled(self) -> list[str]:
        if not os.path.exists(self.journal):
            return []
        with open(self.journal) as handle:
            return handle.read().split()

    def rabbit_queues(self) -> list[str]:
        return [self.topic, *(f"{self.topic}.{name}" for name in ("r1", "z1", "r2"))]


def test_rpc_moves_from_rabbitmq_to_zmq_and_back_losing_nothing(redis_deployment, rabbit_url):
    rabbit = _config(redis_deployment, "rabbit", rabbit_url)
    zmq = redis_deployment.config_file
    service = RpcService(redis_deployment, os.path.join(redis_deployment.tmpdir, "journal"))
    sent: list[str] = []
    try:
        service.start_server(rabbit, "r1")
        sent += service.send(rabbit, "rabbit")
        wait_until(lambda: sorted(service.journaled()) == sorted(sent), what="RabbitMQ casts")

        # Switch: clients stopped (send returned), old server drained and stopped, new one up.
        service.stop_server()
        service.start_server(zmq, "z1")
        service.cannot_reach(rabbit)  # a peer left behind on RabbitMQ talks to nobody
        sent += service.send(zmq, "zmq")
        wait_until(lambda: sorted(service.journaled()) == sorted(sent), what="zmq casts")

        # The way back, in the same order.
        service.stop_server()
        service.start_server(rabbit, "r2")
        service.cannot_reach(zmq)
        sent += service.send(rabbit, "back")
        wait_until(lambda: sorted(service.journaled()) == sorted(sent), what="casts after return")
        assert len(service.journaled()) == 3 * BATCH  # each exactly once
    finally:
        if service.server is not None:
            service.server.kill()
        delete_rabbit_queues(rabbit_url, service.rabbit_queues())


def _handled(listener: helpers.ListenerProcess) -> set[int]:
    return set(listener.handled())


def test_notifications_move_on_their_own_and_back_losing_nothing(redis_deployment, rabbit_url):
    topic = unique("moving-notes")
    # RPC stays on RabbitMQ throughout; only [oslo_messaging_notifications] changes.
    on_rabbit = _config(redis_deployment, "notes-rabbit", rabbit_url)
    on_zmq = _config(redis_deployment, "notes-zmq", rabbit_url, redis_deployment.url)
    seen: set[int] = set()
    listener = helpers.ListenerProcess(on_rabbit, topic)
    try:
        helpers.send_notifications(on_rabbit, topic, 10, start=0)
        wait_until(lambda: _handled(listener) >= set(range(10)), what="notifications on RabbitMQ")

        # Senders move first: the zmq store keeps what they send until a listener comes,
        # while the old listener drains RabbitMQ.
        helpers.send_notifications(on_zmq, topic, 10, start=10)
        helpers.send_notifications(on_rabbit, topic, 5, start=100)  # a sender not moved yet
        wait_until(lambda: _handled(listener) >= set(range(100, 105)), what="RabbitMQ drained")
        listener.stop()
        seen |= _handled(listener)

        listener = helpers.ListenerProcess(on_zmq, topic)
        wait_until(lambda: _handled(listener) >= set(range(10, 20)), what="stored notifications")
        helpers.send_notifications(on_zmq, topic, 10, start=20)
        wait_until(lambda: _handled(listener) >= set(range(10, 30)), what="notifications on zmq")

        # The way back: senders to RabbitMQ first (the notifier declares its queue, which
        # keeps them), then the listener once the zmq store is drained.
        helpers.send_notifications(on_rabbit, topic, 10, start=30)
        listener.stop()
        seen |= _handled(listener)
        listener = helpers.ListenerProcess(on_rabbit, topic)
        wait_until(lambda: _handled(listener) >= set(range(30, 40)), what="back on RabbitMQ")
        listener.stop()
        seen |= _handled(listener)
    finally:
        listener.kill()
        delete_rabbit_queues(rabbit_url, [f"{topic}.info"])
    assert seen == set(range(40)) | set(range(100, 105))
