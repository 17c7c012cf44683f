"""A private one-member ``etcd`` on free loopback ports, stopped by its PID.

Nothing here touches a shared etcd (such as 127.0.0.1:2379): each member has a
data directory of its own and free client and peer ports. ``stop()``/``start()``
restart it on the same ports with the same data (leases survive, as in a real
restart); ``wipe()`` deletes the data while it is stopped (a member lost and
replaced empty).
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Protocol

from harness.net import LOOPBACK, free_port
from harness.process import stop_process
from harness.wait import eventually

ETCD = "/usr/bin/etcd"
START_TIMEOUT = 30.0


class TlsFiles(Protocol):
    """The TLS material a member serves with and a client presents (tests/tls_fixture.py)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


class EtcdServerError(RuntimeError):
    """etcd is missing, did not start or exited."""


def etcd_binary() -> str:
    """Path of etcd; EtcdServerError saying how to install it if there is none."""
    if os.access(ETCD, os.X_OK):
        return ETCD
    found = shutil.which("etcd")
    if found:
        return found
    raise EtcdServerError(
        f"etcd not found ({ETCD} nor on PATH); install it with 'apt-get install etcd-server'"
    )


class EtcdServer:
    """One etcd member, alone in its cluster; ``extra_args`` are added to its command line.

    With ``tls`` its client port serves HTTPS only and requires client certificates.
    """

    def __init__(
        self,
        directory: str | Path,
        extra_args: tuple[str, ...] = (),
        tls: TlsFiles | None = None,
        *,
        name: str = "member",
        peer_port: int | None = None,
        initial_cluster: str | None = None,
    ) -> None:
        """``name``, ``peer_port`` and ``initial_cluster`` make it one member of an EtcdCluster."""
        self.directory = Path(directory)
        self.extra_args = extra_args
        self.tls = tls
        self.name = name
        self.host = LOOPBACK
        self.port = free_port()
        self.peer_port = peer_port or free_port()
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self.process: subprocess.Popen | None = None

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def url(self) -> str:
        return f"zmq+etcd://{self.host}:{self.port}"

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / f"etcd-{self.port}.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, wait: bool = True) -> None:
        """Start the member (again on the same ports and data); ``wait`` until it is healthy."""
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            etcd_binary(),
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", f"zmqdriver-test-{self.initial_cluster}",
            *self._tls_args(),
            *self.extra_args,
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until the member says it is healthy (it has a leader); stopped if it does not."""
        if not eventually(self._ready, START_TIMEOUT, poll=0.02, max_poll=0.2):
            self.stop()
            raise EtcdServerError(
                f"etcd on port {self.port} not healthy in {START_TIMEOUT:.0f} s: {self._log()}"
            )

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Stop the member by its PID (SIGKILL by default: an abrupt outage)."""
        stop_process(self.process, sig)
        self.process = None

    def _tls_args(self) -> tuple[str, ...]:
        if not self.tls:
            return ()
        return (
            "--cert-file", str(self.tls.server_cert),
            "--key-file", str(self.tls.server_key),
            "--trusted-ca-file", str(self.tls.ca),
            "--client-cert-auth",
        )  # fmt: skip

    def client(self):
        """An etcd3gw client (with the client certificate for TLS) to inspect or prepare data."""
        import etcd3gw  # optional, as for the driver

        if not self.tls:
            return etcd3gw.Etcd3Client(host=self.host, port=self.port, timeout=5)
        return etcd3gw.Etcd3Client(
            host=self.host,
            port=self.port,
            protocol="https",
            ca_cert=str(self.tls.ca),
            cert_cert=str(self.tls.client_cert),
            cert_key=str(self.tls.client_key),
            timeout=5,
        )

    def wipe(self) -> None:
        """Delete the data of the stopped member: it comes back empty, leases and all gone."""
        if self.running:
            raise EtcdServerError("wipe() needs the member stopped first")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise EtcdServerError(f"etcd on port {self.port} exited: {self._log()}")
        context = None
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.tls.ca))
            context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        try:
            with urllib.request.urlopen(
                f"{self.client_url}/health", timeout=1, context=context
            ) as reply:
                return b'"true"' in reply.read()
        except OSError:
            return False

    def _log(self) -> str:
        try:
            return self.log_path.read_text()[-2000:] or "empty log"
        except OSError:
            return f"no log at {self.log_path}"


class EtcdCluster:
    """``size`` members of one cluster on free ports, each with its own data directory."""

    def __init__(self, directory: str | Path, size: int = 3) -> None:
        peers = {f"m{index}": free_port() for index in range(size)}
        initial = ",".join(f"{name}=http://{LOOPBACK}:{port}" for name, port in peers.items())
        self.members = [
            EtcdServer(Path(directory) / name, name=name, peer_port=port, initial_cluster=initial)
            for name, port in peers.items()
        ]

    @property
    def url(self) -> str:
        return "zmq+etcd://" + ",".join(f"{m.host}:{m.port}" for m in self.members)

    def start(self) -> None:
        for member in self.members:
            member.start(wait=False)  # a member alone has no quorum: start them all first
        for member in self.members:
            member.wait_ready()

    def leader(self) -> EtcdServer:
        """The member that leads now (as the first running member sees it)."""
        running = [member for member in self.members if member.running]
        leader_id = running[0].client().status()["leader"]
        for member in running:
            if member.client().status()["header"]["member_id"] == leader_id:
                return member
        raise EtcdServerError(f"no running member is the leader {leader_id}")

    def stop(self) -> None:
        for member in self.members:
            member.stop()
