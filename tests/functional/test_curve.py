"""CURVE end to end: servers and clients in separate processes, real keys, real sockets.

Keys are made with the zmqdriver-keys command. Every test runs on the embedded
matchmaker (zmq://) and on Redis, except the traffic capture, which needs only
the loopback interface.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import uuid

import oslo_messaging
import pytest

from harness import green
from harness.wait import wait_until
from tests.functional import helpers
from tests.functional.curve_keys import Keys, keytool, role_config, server_config
from tests.functional.helpers import client, unique
from zmqdriver import addressing, matchmaker, options
from zmqdriver.exceptions import KeyRefused
from zmqdriver.security import CurveConfigError

pytestmark = pytest.mark.timeout(300)

ETH_P_ALL = 0x0003


def client_transport(deployment, keys: Keys, name: str = "client"):
    conf = deployment.conf(zmq_curve_enabled=True, zmq_curve_secret_key_file=keys.secret(name))
    return deployment.transport(conf)


class Servers:
    """CURVE servers of one topic, each with a journal and a log file."""

    def __init__(self, deployment, config_file: str) -> None:
        self.deployment = deployment
        self.config_file = config_file
        self.topic = unique("curve")
        self.procs: dict[str, helpers.ServerProcess] = {}

    def start(self, name: str, mode: str = "threading") -> helpers.ServerProcess:
        proc = helpers.ServerProcess(
            self.config_file,
            self.topic,
            name,
            mode=mode,
            journal=self.journal(name),
            log_file=self.log(name),
        )
        self.procs[name] = proc
        return proc

    def journal(self, name: str) -> str:
        return os.path.join(self.deployment.tmpdir, f"{name}.journal")

    def log(self, name: str) -> str:
        return os.path.join(self.deployment.tmpdir, f"{name}.log")

    def journaled(self, name: str) -> list[str]:
        if not os.path.exists(self.journal(name)):
            return []
        with open(self.journal(name)) as handle:
            return handle.read().split()

    def logged(self, name: str) -> str:
        with open(self.log(name)) as handle:
            return handle.read()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()

    def kill(self) -> None:
        for proc in self.procs.values():
            proc.kill()


@pytest.fixture
def curve_servers(deployment, keys):
    servers = Servers(deployment, server_config(deployment, keys))
    try:
        yield servers
        servers.stop()
    finally:
        servers.kill()


def _records(deployment, conf, topic: str) -> list[addressing.Endpoint]:
    prefix = conf[options.GROUP].zmq_matchmaker_prefix
    store = matchmaker.load(conf, oslo_messaging.TransportURL.parse(conf, deployment.url))
    try:
        records = store.lookup(addressing.rpc_key(prefix, "openstack", topic))
    finally:
        store.close()
    return [addressing.decode_record(record) for record in records]


# -- key holders talk ----------------------------------------------------------------


def test_calls_casts_and_fanout_between_key_holders(deployment, keys, curve_servers):
    curve_servers.start("s1", "threading")
    curve_servers.start("s2", "eventlet")
    topic = curve_servers.topic
    transport = client_transport(deployment, keys)
    try:
        anyone = client(transport, topic, timeout=30)
        assert anyone.call({}, "echo", value={"a": [1, "x"]}) == {"a": [1, "x"]}
        assert {anyone.call({}, "whoami") for _ in range(10)} == {"s1", "s2"}
        for name in ("s1", "s2"):
            direct = client(transport, topic, server=name, timeout=30)
            direct.cast({}, "record", tag=f"cast-{name}")
            assert direct.call({}, "whoami") == name
        client(transport, topic, fanout=True).cast({}, "record", tag="fanout")
        for name in ("s1", "s2"):
            wait_until(
                lambda n=name: sorted(curve_servers.journaled(n)) == [f"cast-{n}", "fanout"],
                what=f"cast and fanout on {name}",
            )
        # The servers published their public key with their address.
        server_key = keytool("list", str(keys.dir)).split("server\t")[1].split()[0]
        endpoints = _records(deployment, deployment.conf(), topic)
        assert len(endpoints) == 2 and {e.key for e in endpoints} == {server_key}
    finally:
        transport.cleanup()


def test_an_eventlet_client_process_with_curve(deployment, keys, curve_servers):
    curve_servers.start("s1")
    curve_servers.start("s2")
    config = role_config(
        deployment,
        "curve-client",
        zmq_curve_enabled=True,
        zmq_curve_secret_key_file=keys.secret("client"),
    )
    done = subprocess.run(
        green.command(
            "tests.functional.rpc_client_proc",
            "--config-file",
            config,
            "--topic",
            curve_servers.topic,
        ),
        cwd=helpers.REPO,
        env=dict(os.environ, PYTHONPATH=helpers.REPO),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]


# -- strangers are refused -------------------------------------------------------------


def test_a_client_whose_key_is_not_allowed_gets_nothing_executed(deployment, keys, curve_servers):
    curve_servers.start("s1")
    curve_servers.start("s2")
    topic = curve_servers.topic
    stranger = client_transport(deployment, keys, "stranger")
    friend = client_transport(deployment, keys)
    stranger_key = keytool("list", str(keys.dir)).split("stranger\t")[1].split()[0]
    try:
        # Refused at the handshake: the call ends with the refusal, not at its
        # 30 s timeout (a MessageDeliveryFailure, not a MessagingTimeout).
        with pytest.raises(KeyRefused) as info:
            client(stranger, topic, timeout=30).call({}, "record", tag="stranger-refused")
        assert not isinstance(info.value, oslo_messaging.MessagingTimeout)
        message = str(info.value)
        assert f"topic={topic!r}" in message
        assert "refused this client's CURVE key" in message and stranger_key in message
        assert "zmq_curve_allowed_keys_dir" in message
        # A cast is held meanwhile (the policy of doc/security.md).
        client(stranger, topic).cast({}, "record", tag="stranger-cast")
        wait_until(
            lambda: all("refused" in curve_servers.logged(n) for n in ("s1", "s2")),
            what="the refusal log line of both servers",
        )
        journaled = curve_servers.journaled("s1") + curve_servers.journaled("s2")
        assert journaled == []
        for name in ("s1", "s2"):
            direct = client(friend, topic, server=name, timeout=30)
            assert direct.call({}, "recorded", prefix="stranger") == []

        # Allowed at run time: the servers reload their directory within about
        # 2 s, no restart; until then calls are still refused, at once. The held
        # cast goes through.
        keytool("allow", keys.public("stranger"), str(keys.allowed))
        wait_until(
            lambda: _call_unless_refused(client(stranger, topic, timeout=30), "stranger-allowed"),
            what="a call once the key is allowed",
            poll=0.5,
        )
        wait_until(
            lambda: (
                sorted(curve_servers.journaled("s1") + curve_servers.journaled("s2"))
                == ["stranger-allowed", "stranger-cast"]
            ),
            what="the held cast and the call",
        )
    finally:
        stranger.cleanup()
        friend.cleanup()


def _call_unless_refused(rpc_client, tag: str) -> bool:
    try:
        rpc_client.call({}, "record", tag=tag)
    except KeyRefused:
        return False
    return True


def test_a_client_without_curve_gets_a_clear_handshake_error(deployment, keys, curve_servers):
    curve_servers.start("s1")
    plain = deployment.transport()
    try:
        with pytest.raises(oslo_messaging.MessagingTimeout) as info:
            client(plain, curve_servers.topic, timeout=3).call({}, "record", tag="plain")
    finally:
        plain.cleanup()
    message = str(info.value)
    assert f"topic={curve_servers.topic!r}" in message
    assert "handshake" in message and "CURVE" in message
    assert curve_servers.journaled("s1") == []


def test_a_curve_client_skips_servers_without_a_key(deployment, keys, caplog):
    topic = unique("plain")
    server = deployment.server(topic, "p1")
    transport = client_transport(deployment, keys)
    try:
        with caplog.at_level(logging.WARNING, logger="zmqdriver.discovery"):
            with pytest.raises(oslo_messaging.MessagingTimeout, match=f"topic={topic!r}"):
                client(transport, topic, timeout=2).call({}, "echo", value=1)
        assert any("has no CURVE key" in r.getMessage() for r in caplog.records)
        server.stop()
    finally:
        transport.cleanup()
        server.kill()


# -- startup errors ----------------------------------------------------------------------


def test_bad_key_options_fail_at_startup_naming_option_and_path(deployment, keys, tmp_path):
    missing = str(tmp_path / "nope.key_secret")
    conf = deployment.conf(zmq_curve_enabled=True, zmq_curve_secret_key_file=missing)
    with pytest.raises(CurveConfigError, match="zmq_curve_secret_key_file") as info:
        deployment.transport(conf)
    assert missing in str(info.value)
    conf = deployment.conf(
        zmq_curve_enabled=True,
        zmq_curve_secret_key_file=keys.secret("server"),
        zmq_curve_allowed_keys_dir=str(tmp_path / "no-such-dir"),
    )
    with pytest.raises(CurveConfigError, match="zmq_curve_allowed_keys_dir .* does not exist"):
        deployment.transport(conf)


def test_a_server_without_allowed_keys_dir_does_not_start(deployment, keys):
    transport = client_transport(deployment, keys, "server")
    try:
        target = oslo_messaging.Target(topic=unique("nodir"), server="x")
        server = oslo_messaging.get_rpc_server(transport, target, [object()])
        with pytest.raises(CurveConfigError, match="zmq_curve_allowed_keys_dir is not set"):
            server.start()
    finally:
        transport.cleanup()


# -- what travels on the wire ------------------------------------------------------------


class LoopbackCapture:
    """Every packet on the loopback interface while in use (a raw AF_PACKET socket)."""

    def __init__(self) -> None:
        try:
            self._socket = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except (AttributeError, PermissionError) as exc:
            pytest.skip(f"capturing packets needs Linux and root (CAP_NET_RAW): {exc}")
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024 * 1024)
        self._socket.bind(("lo", 0))
        self._socket.settimeout(0.05)
        self.packets: list[bytes] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LoopbackCapture:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.packets.append(self._socket.recv(1 << 18))
            except TimeoutError:
                continue

    def __exit__(self, *exc_info) -> None:
        self._stopping.set()
        self._thread.join()
        # Packets are queued to us as they are sent, so what the finished
        # call sent is in the buffer by now: drain it.
        self._socket.setblocking(False)
        while True:
            try:
                self.packets.append(self._socket.recv(1 << 18))
            except BlockingIOError:
                break
        self._socket.close()

    def saw(self, data: bytes) -> bool:
        return any(data in packet for packet in self.packets)


def _captured_call(deployment, transport, config_file: str) -> tuple[LoopbackCapture, bytes]:
    topic = unique("wire")
    server = helpers.ServerProcess(config_file, topic, "w1")
    try:
        payload = f"distinctive-payload-{uuid.uuid4().hex}"
        with LoopbackCapture() as capture:
            assert client(transport, topic, timeout=30).call({}, "echo", value=payload) == payload
        server.stop()
    finally:
        server.kill()
    assert capture.packets, "the capture saw nothing at all"
    return capture, payload.encode()


@pytest.mark.parametrize("deployment", ["zmq"], indirect=True)
def test_the_payload_is_not_in_clear_text_on_the_wire(deployment, keys):
    transport = client_transport(deployment, keys)
    try:
        capture, payload = _captured_call(deployment, transport, server_config(deployment, keys))
    finally:
        transport.cleanup()
    assert not capture.saw(payload)


@pytest.mark.parametrize("deployment", ["zmq"], indirect=True)
def test_without_curve_the_capture_sees_the_payload(deployment):
    # The control: the same capture does see a call without CURVE.
    transport = deployment.transport()
    try:
        capture, payload = _captured_call(deployment, transport, deployment.config_file)
    finally:
        transport.cleanup()
    assert capture.saw(payload)
