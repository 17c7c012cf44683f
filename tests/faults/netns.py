"""Several "hosts" on one machine: Linux network namespaces on a private bridge.

    network = Network(3)        # hosts h1..h3 at 10.231.77.1..3
    try:
        network.create()
        proc = network.run(network.hosts[0], ["redis-server", ...])
    finally:
        network.cleanup()       # kills what run() started, deletes every namespace

Layout: a namespace ``zd-<random>-lan`` holds a bridge; each host namespace
``zd-<random>-hK`` has one end of a veth pair (``eth0``, address
``<subnet>.K/24``) whose other end is a port of that bridge. The veth pairs are
created inside the lan namespace with their peer placed straight into the host
namespace, so nothing is ever added to the machine's own network namespace and
the hosts' addresses exist only behind the bridge. The random part of the names
lets concurrent test runs (even with the same subnet) stay apart.

Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's ``ip``.
"""

from __future__ import annotations

import signal
import subprocess
import uuid
from dataclasses import dataclass

IP = "ip"
COMMAND_TIMEOUT = 30.0
KILL_TIMEOUT = 10.0
DEFAULT_SUBNET = "10.231.77"


class NetnsError(RuntimeError):
    """An ``ip`` command failed; the message names the command and its error."""


@dataclass(frozen=True)
class Host:
    """One namespace of the network: its name and its only address."""

    name: str
    ip: str


def ip(*args: str) -> str:
    """Run ``ip ARGS``; its stdout, or NetnsError with the command and stderr."""
    command = [IP, *args]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"{' '.join(command)}: {exc}") from exc
    if done.returncode != 0:
        raise NetnsError(
            f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip() or '(no stderr)'}"
        )
    return done.stdout


class Network:
    """``count`` host namespaces on one bridge; see the module docstring."""

    def __init__(self, count: int, subnet: str = DEFAULT_SUBNET) -> None:
        if not 1 <= count <= 250:
            raise ValueError(f"count must be 1..250, not {count}")
        self.tag = f"zd-{uuid.uuid4().hex[:8]}"
        self.lan = f"{self.tag}-lan"
        self.hosts = [Host(f"{self.tag}-h{k}", f"{subnet}.{k}") for k in range(1, count + 1)]
        # What exists so far, so cleanup() after a failed create() removes exactly that.
        self._namespaces: list[str] = []
        self._processes: list[subprocess.Popen] = []

    def create(self) -> None:
        """Create the lan namespace with its bridge, then every host on it."""
        self._add_namespace(self.lan)
        ip("-n", self.lan, "link", "set", "lo", "up")
        ip("-n", self.lan, "link", "add", "br0", "type", "bridge")
        ip("-n", self.lan, "link", "set", "br0", "up")
        for k, host in enumerate(self.hosts, start=1):
            self._add_namespace(host.name)
            port = f"p{k}"
            ip("-n", self.lan, "link", "add", port, "type", "veth",
               "peer", "name", "eth0", "netns", host.name)  # fmt: skip
            ip("-n", self.lan, "link", "set", port, "master", "br0")
            ip("-n", self.lan, "link", "set", port, "up")
            ip("-n", host.name, "addr", "add", f"{host.ip}/24", "dev", "eth0")
            ip("-n", host.name, "link", "set", "eth0", "up")
            # Servers bind and clients connect to 127.0.0.1 too (e.g. defaults).
            ip("-n", host.name, "link", "set", "lo", "up")

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self._namespaces.append(name)

    def run(self, host: Host, argv: list[str], **popen_kwargs) -> subprocess.Popen:
        """Start ``argv`` inside ``host``; cleanup() kills it if it still runs then.

        ``ip netns exec`` enters the namespace and then execs ``argv``, so the
        returned process's PID is the program's own: signals reach it directly.
        """
        if host.name not in self._namespaces:
            raise ValueError(f"{host.name} is not a namespace of this network")
        process = subprocess.Popen([IP, "netns", "exec", host.name, *argv], **popen_kwargs)
        self._processes.append(process)
        return process

    def check_output(self, host: Host, argv: list[str], timeout: float = COMMAND_TIMEOUT) -> str:
        """Run ``argv`` inside ``host`` to the end; its stdout, or CalledProcessError."""
        return subprocess.run(
            [IP, "netns", "exec", host.name, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        ).stdout

    def cleanup(self) -> None:
        """Kill the processes run() started, then delete every namespace created.

        Processes go first: a namespace whose name is deleted lives on as long
        as a process is inside it. Every step is tried; failures are raised
        together at the end so a leak is reported rather than hidden.
        """
        errors: list[str] = []
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            try:
                process.wait(KILL_TIMEOUT)
            except subprocess.TimeoutExpired:
                errors.append(f"process {process.pid} ({process.args}) did not die")
        self._processes.clear()
        # Hosts before the lan: deleting a host takes its veth pair (and so the
        # bridge port) with it, and the lan goes last with the bridge.
        for name in reversed(self._namespaces):
            try:
                ip("netns", "delete", name)
            except NetnsError as exc:
                errors.append(str(exc))
        self._namespaces.clear()
        if errors:
            raise NetnsError("cleanup failed: " + "; ".join(errors))
