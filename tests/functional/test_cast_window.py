"""Casts stream through a per-server window: at most zmq_cast_window on their way at once.

The "server" here is a ROUTER socket the test drives by hand (registered in
the embedded matchmaker like a real one), so the test decides when a cast is
DONE and can see exactly what the client sends.
"""

from __future__ import annotations

import os
import threading

import oslo_messaging
import pytest
import zmq

from harness.config import write_config
from tests.functional import helpers
from tests.functional.helpers import client, unique
from zmqdriver import addressing, protocol
from zmqdriver.addressing import Endpoint
from zmqdriver.matchmaker.local import LocalMatchMaker

WINDOW = 2


class HandDrivenServer:
    """A ROUTER registered under a topic; the test reads casts and answers DONE itself."""

    def __init__(self, conf, topic: str) -> None:
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        port = self.router.bind_to_random_port("tcp://127.0.0.1")
        zconf = conf.oslo_messaging_zmq
        key = addressing.rpc_key(zconf.zmq_matchmaker_prefix, "openstack", topic)
        self.matchmaker = LocalMatchMaker(conf, None)
        self.matchmaker.register(key, addressing.encode_record(Endpoint("127.0.0.1", port)), 60)

    def receive(self, timeout: float) -> list[bytes] | None:
        """The next request's frames, or None if none came within ``timeout`` seconds."""
        if not self.router.poll(int(timeout * 1000)):
            return None
        return self.router.recv_multipart()

    def done(self, frames: list[bytes]) -> None:
        identity, head = frames[0], frames[1]
        header = protocol.decode_header(head)
        reply = protocol.encode_header(protocol.Kind.DONE, header.msg_id, header.codec)
        self.router.send_multipart([identity, reply])

    def close(self) -> None:
        self.matchmaker.close()
        self.router.close(linger=0)
        self.context.term()


@pytest.fixture
def config_file(tmp_path) -> str:
    return write_config(
        os.path.join(tmp_path, "zmq.conf"),
        "zmq://",
        zmq_matchmaker_path=os.path.join(tmp_path, "mm", "matchmaker.sqlite"),
        zmq_cast_window=WINDOW,
    )


@pytest.fixture
def conf(config_file):
    conf = helpers.make_conf(config_file)
    oslo_messaging.get_rpc_transport(conf).cleanup()  # registers the driver's options
    return conf


def test_a_full_window_holds_the_next_cast_until_a_done_frees_it(conf):
    topic = unique("window")
    server = HandDrivenServer(conf, topic)
    transport = oslo_messaging.get_rpc_transport(conf)
    try:
        caster = client(transport, topic)
        for i in range(WINDOW):
            caster.cast({}, "record", tag=f"c{i}")  # returns at once: the window has room
        first = [server.receive(timeout=30) for _ in range(WINDOW)]
        assert all(first), "the casts within the window were sent"

        third = threading.Thread(target=caster.cast, args=({}, "record"), kwargs={"tag": "c2"})
        third.start()
        # The window is full and nothing is DONE: the third cast must not leave.
        assert server.receive(timeout=1.0) is None
        assert third.is_alive()

        server.done(first[0])
        assert server.receive(timeout=30) is not None, "a DONE made room for the third cast"
        third.join(30)
        assert not third.is_alive()
    finally:
        transport.cleanup()
        server.close()


def test_a_cast_resent_while_it_runs_gets_its_done_on_the_new_connection(config_file, conf):
    """A sender that lost its connection resends on a new one: the DONE must come there."""
    topic = unique("resent")
    server = helpers.ServerProcess(config_file, topic, "slow")
    matchmaker = LocalMatchMaker(conf, None)
    context = zmq.Context()
    transport = oslo_messaging.get_rpc_transport(conf)
    try:
        key = addressing.rpc_key(conf.oslo_messaging_zmq.zmq_matchmaker_prefix, "openstack", topic)
        (endpoint,) = [addressing.decode_record(r) for r in matchmaker.lookup(key)]
        msg_id = protocol.new_msg_id()
        head = protocol.encode_header(protocol.Kind.CAST, msg_id)
        body = protocol.encode_body(
            {
                "exchange": "openstack",
                "topic": topic,
                "server": None,
                "fanout": False,
                "ctxt": {},
                "message": {"method": "slow_record", "args": {"tag": "once", "seconds": 1}},
            },
            protocol.Codec.JSON,
        )
        first, second = (context.socket(zmq.DEALER) for _ in range(2))
        for dealer in (first, second):
            dealer.connect(endpoint.uri)
        first.send_multipart([head, body])
        second.send_multipart([head, body])  # the resend, while the first copy runs
        kinds = set()
        while protocol.Kind.DONE not in kinds:
            assert second.poll(30_000), f"no DONE on the new connection (saw {kinds})"
            kinds.add(protocol.decode_header(second.recv_multipart()[0]).kind)
        recorded = client(transport, topic).call({}, "recorded", prefix="once")
        assert recorded == ["once"]  # and it ran once
    finally:
        transport.cleanup()
        context.destroy(linger=0)
        matchmaker.close()
        server.stop()
