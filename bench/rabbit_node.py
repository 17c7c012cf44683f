"""A private RabbitMQ node for one benchmark run, on free ports, stopped by its PID.

The machine's own broker (127.0.0.1:5672) runs with a soft limit of 1,024 file descriptors,
which 300 scale hosts pass (doc/scaling.md); it is not ours to restart. This node is: its
own node name, AMQP and distribution ports, Mnesia and log directories under ``directory``,
its own (empty) config and env files so nothing of /etc/rabbitmq applies, and
``RLIMIT_NOFILE`` raised before the Erlang VM starts (to 65,536, or this process's hard
limit if lower: an unprivileged container cannot go past it). It shares the running epmd.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from pathlib import Path

from bench.procs import ProcessError, amqp_answers
from harness.net import LOOPBACK, free_port
from harness.process import stop_process
from harness.wait import eventually

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")  # the scripts themselves, not the su wrappers
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0


class RabbitNode:
    """``rabbitmq-server`` in the foreground as a child of this process."""

    def __init__(self, directory: str | Path, nofile: int = 65536) -> None:
        self.directory = Path(directory)
        self.nofile = min(nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        self.port = free_port()
        self.dist_port = free_port()
        self.name = f"scale{self.port}@localhost"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rabbit://guest:guest@{LOOPBACK}:{self.port}/"

    def start(self) -> None:
        """Start the node and wait until it speaks AMQP; ProcessError if it does not."""
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "startup.log", "w")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(
            [str(RABBIT_BIN / "rabbitmq-server")],
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=self._raise_nofile,
            cwd=self.directory,
        )
        log.close()
        if not eventually(self._ready, START_TIMEOUT, poll=0.2, max_poll=1.0):
            self.stop()
            tail = (self.directory / "startup.log").read_text(errors="replace")[-600:]
            raise ProcessError(f"RabbitMQ node {self.name} did not start: {tail}")

    def stop(self) -> None:
        """SIGTERM (the VM shuts down cleanly), SIGKILL if it takes longer than a minute."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            stop_process(self.process, signal.SIGKILL)

    @property
    def vm_pid(self) -> int | None:
        """The Erlang VM's PID (the started script is its parent), from its pid file."""
        try:
            return int((self.directory / "rabbit.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def fd_limit(self) -> int | None:
        """The running VM's soft RLIMIT_NOFILE (proof that the raise took)."""
        if self.vm_pid is None:
            return None
        for line in Path(f"/proc/{self.vm_pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
        return None

    def orphan_queues(self, prefix: str) -> tuple[int, int] | None:
        """Queues named ``prefix*`` that no consumer reads, and the messages in them.

        None if rabbitmqctl failed. oslo's fanout queues (``<topic>_fanout_<uuid>``) are
        not auto-delete: one whose agent died stays, and keeps getting every fanout, until
        ``rabbit_transient_queues_ttl`` (x-expires, 1,800 s) passes without a consumer.
        """
        command = [str(RABBIT_BIN / "rabbitmqctl"), "-n", self.name, "-q", "list_queues"]
        command += ["name", "consumers", "messages"]
        try:
            listed = subprocess.run(
                command, env=self._env(), capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if listed.returncode != 0:
            return None
        queues = messages = 0
        for line in listed.stdout.splitlines():
            name, consumers, count = (line.split() + ["", "", ""])[:3]
            if name.startswith(prefix) and consumers == "0":
                queues += 1
                messages += int(count or 0)
        return queues, messages

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise ProcessError(f"RabbitMQ node {self.name} exited with {self.process.returncode}")
        return amqp_answers(LOOPBACK, self.port)

    def _raise_nofile(self) -> None:
        # Runs in the child before exec: what `ulimit -n` would do in its shell.
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def _env(self) -> dict[str, str]:
        empty_conf = self.directory / "rabbitmq.conf"
        empty_conf.write_text(f"listeners.tcp.local = {LOOPBACK}:{self.port}\n")
        env_file = self.directory / "rabbitmq-env.conf"
        env_file.write_text("")  # not /etc/rabbitmq/rabbitmq-env.conf (NODENAME=rabbit@localhost)
        plugins = self.directory / "enabled_plugins"
        plugins.write_text("[].\n")
        return {
            **os.environ,
            "HOME": str(self.directory),  # its own Erlang cookie
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": LOOPBACK,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_CONFIG_FILE": str(empty_conf.with_suffix("")),
            "RABBITMQ_CONF_ENV_FILE": str(env_file),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_PID_FILE": str(self.directory / "rabbit.pid"),
            "ERL_EPMD_ADDRESS": LOOPBACK,
        }
