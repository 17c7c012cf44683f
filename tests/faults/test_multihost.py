"""RPC across hosts: three network namespaces on one bridge, Redis as matchmaker.

Host A runs redis-server and the client, hosts B and C one RPC server each.
Every process has its own IP and config file (rpc_zmq_host and
rpc_zmq_bind_address set to that IP), so discovery and traffic must cross the
bridge: nothing can work by accident over a shared loopback. All addresses
exist only inside the namespaces this module creates (tests/faults/netns.py).

Needs root, iproute2 and redis-server (as CI has); fails rather than skips
without them, since skipping would hide that cross-host RPC is untested.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.config import write_config
from harness.redis_server import redis_server_binary
from harness.wait import wait_until
from tests.faults import netns
from tests.functional import helpers

REDIS_PORT = 6379
START_TIMEOUT = 30.0
CLIENT_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
EXCHANGE = "openstack"  # the default exchange: targets below name none
SERVERS = ("srv-b", "srv-c")


@dataclass
class Deployment:
    network: netns.Network
    redis: netns.Host
    prefix: str
    configs: dict[str, str]  # host name -> its config file
    tmpdir: Path

    def redis_cli(self, host: netns.Host, *command: str) -> str:
        """A Redis command sent from ``host``, so across the bridge to host A."""
        argv = ["redis-cli", "-h", self.redis.ip, "-p", str(REDIS_PORT), *command]
        return self.network.check_output(host, argv).strip()

    def records(self, key: str) -> list[dict]:
        """The matchmaker records (JSON members of a sorted set) under ``key``."""
        output = self.redis_cli(self.network.hosts[2], "ZRANGE", key, "0", "-1")
        return sorted((json.loads(line) for line in output.splitlines()), key=str)


@pytest.fixture(scope="module")
def network() -> Iterator[netns.Network]:
    network = netns.Network(3)
    try:
        try:
            network.create()
        except netns.NetnsError as exc:
            pytest.fail(f"cannot create network namespaces (needs root): {exc}", pytrace=False)
        yield network
    finally:
        network.cleanup()


@pytest.fixture(scope="module")
def multihost(network, tmp_path_factory) -> Deployment:
    """Redis on host A (network cleanup kills it) and one config file per host."""
    tmpdir = tmp_path_factory.mktemp("multihost")
    a, b, _ = network.hosts
    log = tmpdir / "redis.log"
    redis = network.run(
        a,
        [
            redis_server_binary(),
            "--bind", a.ip,
            "--port", str(REDIS_PORT),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "no",
            "--daemonize", "no",
            "--dir", str(tmpdir),
            "--logfile", str(log),
        ],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"zmq+redis://{a.ip}:{REDIS_PORT}"
    prefix = helpers.unique("multihost")
    configs = {
        host.name: write_config(
            str(tmpdir / f"{host.name}.conf"),
            url,
            rpc_zmq_host=host.ip,
            rpc_zmq_bind_address=host.ip,
            zmq_matchmaker_prefix=prefix,
        )
        for host in network.hosts
    }
    deployment = Deployment(network, a, prefix, configs, tmpdir)

    def answers() -> bool:
        if redis.poll() is not None:
            raise AssertionError(f"redis-server exited {redis.returncode}: {tail(log)}")
        try:
            return deployment.redis_cli(b, "PING") == "PONG"
        except subprocess.CalledProcessError:
            return False

    wait_until(answers, START_TIMEOUT, f"redis-server at {a.ip} to answer from {b.name}")
    return deployment


class Server:
    """tests/functional/rpc_server_proc.py inside one host's namespace."""

    def __init__(self, deployment: Deployment, host: netns.Host, topic: str, name: str) -> None:
        self.name = name
        self.log = deployment.tmpdir / f"{name}.log"
        argv = [sys.executable, "-m", "tests.functional.rpc_server_proc"]
        argv += ["--config-file", deployment.configs[host.name], "--topic", topic]
        argv += ["--server", name]
        with open(self.log, "w") as stderr:
            self.proc = deployment.network.run(
                host, argv, **python_env(), stdout=subprocess.PIPE, stderr=stderr, text=True
            )
        line = read_line(self.proc, START_TIMEOUT)
        if line != "READY":
            raise AssertionError(f"server {name} said {line!r}: {tail(self.log)}")

    def stop(self) -> int:
        """SIGTERM (a graceful stop); the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server {self.name} ignored SIGTERM: {tail(self.log)}") from None
        return self.proc.returncode


def python_env() -> dict:
    return {"cwd": helpers.REPO, "env": dict(os.environ, PYTHONPATH=helpers.REPO)}


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The first stdout line of ``proc``, waiting at most ``timeout``."""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return f"<nothing within {timeout}s>"
    return proc.stdout.readline().strip()


def tail(path: Path) -> str:
    try:
        return path.read_text()[-3000:] or "(empty log)"
    except OSError as exc:
        return f"(no log: {exc})"


def test_rpc_across_hosts(multihost):
    # Named apart from tests.functional's ``deployment`` fixture, which
    # tests/faults/conftest.py brings into this directory.
    deployment = multihost
    a, b, c = deployment.network.hosts
    topic = helpers.unique("topic")
    servers = [Server(deployment, host, topic, name) for host, name in zip((b, c), SERVERS)]

    client = deployment.network.run(
        a,
        [sys.executable, "-m", "tests.faults.multihost_client"]
        + ["--config-file", deployment.configs[a.name], "--topic", topic]
        + ["--servers", ",".join(SERVERS)],
        **python_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = client.communicate(timeout=CLIENT_TIMEOUT)
    assert client.returncode == 0, f"client exited {client.returncode}: {err[-3000:]}"
    summary = json.loads(out.splitlines()[-1])

    assert summary["echo"] == {"text": "héllo", "n": [1, 2.5, None]}
    assert set(summary["whoami"]) == set(SERVERS)
    assert summary["directed"] == {name: name for name in SERVERS}
    casts = summary["casts"]
    assert sorted(casts["srv-b"] + casts["srv-c"]) == sorted(f"cast-{i}" for i in range(20))
    assert summary["fanout"] == {name: ["fanout"] for name in SERVERS}

    # Each server published its own host's IP (rpc_zmq_host), not 127.0.0.1 or
    # a host name: that is what let the client on A reach it.
    key = f"{deployment.prefix}/rpc/{EXCHANGE}/{topic}"
    per_server = {name: deployment.records(f"{key}/{name}") for name in SERVERS}
    for (name, records), host in zip(per_server.items(), (b, c)):
        assert [(r["v"], r["host"]) for r in records] == [(1, host.ip)], (name, records)
        assert isinstance(records[0]["port"], int)
    assert deployment.records(key) == sorted(per_server["srv-b"] + per_server["srv-c"], key=str)

    exits = {server.name: server.stop() for server in servers}
    assert exits == {name: 0 for name in SERVERS}, {s.name: tail(s.log) for s in servers}
    # A graceful stop withdraws the records, so clients stop choosing the server.
    assert deployment.records(key) == []
    assert all(deployment.records(f"{key}/{name}") == [] for name in SERVERS)
