"""Helpers of the functional tests: configs, server processes, clients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid

import oslo_messaging
from oslo_config import cfg
from oslo_messaging._metrics import client as metrics_client
from oslo_messaging._tracing import client as tracing_client

from harness import green

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_conf(config_file: str) -> cfg.ConfigOpts:
    """A private ConfigOpts loaded from ``config_file``."""
    conf = cfg.ConfigOpts()
    # oslo.messaging 18.3 registers its tracing and metrics options on cfg.CONF
    # only, yet RPCClient reads them from whatever conf it is given.
    conf.register_opts(tracing_client.oslo_messaging_tracing, group="oslo_messaging_tracing")
    conf.register_opts(metrics_client.oslo_messaging_metrics, group="oslo_messaging_metrics")
    conf(["--config-file", config_file])
    return conf


def python_m(module: str, args: list[str], eventlet: bool = False) -> list[str]:
    """``python -m <module> <args>``; under ``eventlet`` monkey-patched first (harness.green)."""
    if eventlet:
        return green.command(module, *args)
    return [sys.executable, "-m", module, *args]


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


class ChildProcess:
    """A test program in its own process: stopped gracefully or killed, by PID."""

    name = "child"
    proc: subprocess.Popen

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful stop (SIGTERM); asserts the program exits cleanly."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        assert self.proc.returncode == 0, f"{self.name} exited {self.proc.returncode}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


class ServerProcess(ChildProcess):
    """An RPC server (tests/functional/rpc_server_proc.py) in its own process."""

    def __init__(
        self,
        config_file: str,
        topic: str,
        server: str,
        exchange: str | None = None,
        mode: str = "threading",
        journal: str | None = None,
        log_file: str | None = None,
    ) -> None:
        """``log_file``: where the server's stderr (its warnings) goes; default: inherited."""
        self.name = server
        args = [
            "--config-file",
            config_file,
            "--topic",
            topic,
            "--server",
            server,
            "--mode",
            mode,
        ]
        if exchange:
            args += ["--exchange", exchange]
        if journal:
            args += ["--journal", journal]
        cmd = python_m("tests.functional.rpc_server_proc", args, eventlet=mode == "eventlet")
        env = dict(os.environ, PYTHONPATH=REPO)
        # The child gets its own copy of the descriptor; ours is closed below.
        stderr = open(log_file, "a") if log_file else None
        try:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
            )
        finally:
            if stderr is not None:
                stderr.close()
        line = self.proc.stdout.readline().strip()
        if line != "READY":
            self.kill()
            raise AssertionError(f"server {server} did not start (said {line!r})")


def client(
    transport,
    topic: str,
    server: str | None = None,
    exchange: str | None = None,
    fanout: bool = False,
    **kwargs,
):
    target = oslo_messaging.Target(topic=topic, server=server, exchange=exchange, fanout=fanout)
    return oslo_messaging.get_rpc_client(transport, target, **kwargs)


class ListenerProcess(ChildProcess):
    """A notification listener (tests/functional/notify_listener_proc.py) in its own process.

    ``records`` collects the JSON lines it prints, one per handled notification.
    """

    def __init__(self, config_file: str, topic: str, *options: str) -> None:
        args = ["--config-file", config_file, "--topic", topic, *options]
        cmd = python_m(
            "tests.functional.notify_listener_proc", args, eventlet="eventlet" in options
        )
        env = dict(os.environ, PYTHONPATH=REPO)
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        self.records: list[dict] = []
        # A listener started over a backlog may handle some of it before it says so.
        while (line := self.proc.stdout.readline()) and not json.loads(line).get("ready"):
            self.records.append(json.loads(line))
        if not line:
            self.kill()
            raise AssertionError(f"listener did not start (said {self.records!r})")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.records.append(json.loads(line))

    def handled(self) -> list[int]:
        return [r["n"] for r in list(self.records) if "n" in r]

    name = "listener"

    def stop(self, timeout: float = 60.0) -> None:
        super().stop(timeout)
        self._reader.join(timeout)


def send_notifications(
    config_file: str, topic: str, count: int, start: int = 0, driver: str = "messagingv2"
) -> None:
    """Send ``count`` notifications from a process that exits afterwards."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.functional.notify_sender_proc",
            "--config-file",
            config_file,
            "--topic",
            topic,
            "--count",
            str(count),
            "--start",
            str(start),
            "--driver",
            driver,
        ],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        check=True,
        timeout=300,
    )
