"""Processes of a benchmark run: child processes and the local RabbitMQ.

Everything started here is stopped by PID (``stop()``), and callers do so in
``finally`` blocks. The private Redis of the zmq+redis:// column is harness.redis_server's.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO
from urllib.parse import urlsplit

from harness.net import LOOPBACK
from harness.wait import eventually

STOP_TIMEOUT = 10.0


class StopRequest:
    """Whether SIGTERM has arrived, for the main loop of a benchmark child process.

    A plain flag, not a ``threading.Event``: the handler runs in the main
    thread, maybe right when that thread holds the event's lock inside
    ``Event.wait``, and ``Event.set()`` there deadlocks (seen: a server that
    ignored SIGTERM until it was killed 10 s later).
    """

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, *_) -> None:
        self.requested = True

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless already requested; whether it is requested now."""
        if not self.requested:
            time.sleep(seconds)
        return self.requested


class ProcessError(RuntimeError):
    """A helper process did not start or misbehaved."""


def stop_pid(process: subprocess.Popen, name: str = "", dump_stacks: bool = False) -> None:
    """Stop ``process`` by its PID: SIGTERM first, SIGKILL if it lingers.

    A process that lingers is reported; with ``dump_stacks`` it is first sent
    SIGUSR1, on which bench's children print every thread's stack to stderr.
    """
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
        return
    except subprocess.TimeoutExpired:
        pass
    print(
        f"warning: {name or process.args} (pid {process.pid}) did not exit within "
        f"{STOP_TIMEOUT:.0f} s of SIGTERM; killing it" + (", its stacks:" if dump_stacks else ""),
        file=sys.stderr,
        flush=True,
    )
    if dump_stacks:
        os.kill(process.pid, signal.SIGUSR1)
        time.sleep(1.0)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(STOP_TIMEOUT)


class Child:
    """A module run in its own process: ``python -m <module> <args>``, e.g. ``bench.rpc_server``.

    Started from this process's working directory, the repository root, as the benchmark is
    (``harness.green`` with the module as its first argument runs it under eventlet).
    Its stdout lines are queued: the module announces itself with a line
    (``READY ...``), and ``expect`` waits for a line with a given prefix.
    """

    def __init__(
        self, module: str, *args: str, name: str | None = None, stderr: IO | None = None
    ) -> None:
        """``stderr``: a file for the child's stderr (by default it shares this process's)."""
        self.name = name or module
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            bufsize=1,
        )
        self.ready_line = ""  # the READY line, once start_children has seen it
        self._lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=self._read, name=f"stdout-{self.name}", daemon=True)
        reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)  # end of output: the process exited

    def expect(self, prefix: str, timeout: float) -> str:
        """The next output line starting with ``prefix``; ProcessError on exit or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                raise ProcessError(
                    f"{self.name}: no {prefix!r} line within {timeout:.0f} s"
                ) from None
            if line is None:
                code = self.process.wait()
                raise ProcessError(f"{self.name} exited with status {code} before {prefix!r}")
            if line.startswith(prefix):
                return line

    def stop(self) -> None:
        stop_pid(self.process, self.name, dump_stacks=True)


def child_spec(
    module: str, args: list[str], name: str, executor: str = "threading"
) -> tuple[str, list[str], str]:
    """A ``start_children`` spec of ``python -m <module> <args>``; with the eventlet executor
    it runs through ``harness.green``, monkey-patched before the module is imported."""
    if executor == "eventlet":
        return "harness.green", [module, *args], name
    return module, args, name


def start_children(specs: list[tuple[str, list[str], str]], timeout: float) -> list[Child]:
    """Start several children at once (module, args, name); wait up to ``timeout`` for READY.

    On any failure the ones already started are stopped before the error propagates.
    """
    children: list[Child] = []
    try:
        for module, args, name in specs:
            children.append(Child(module, *args, name=name))
        deadline = time.monotonic() + timeout
        for child in children:
            remaining = max(0.0, deadline - time.monotonic())
            child.ready_line = child.expect("READY", remaining)
    except BaseException:
        stop_all(children)
        raise
    return children


def stop_all(children: list[Child]) -> None:
    """Stop every child by PID, all at once: SIGTERM to each, then wait, SIGKILL stragglers."""
    for child in children:
        if child.process.poll() is None:
            os.kill(child.pid, signal.SIGTERM)
    for child in children:
        try:
            child.stop()
        except Exception as exc:  # reported, the others still get stopped
            print(f"warning: could not stop {child.name} (pid {child.pid}): {exc}", flush=True)


def amqp_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether an AMQP 0-9-1 broker answers the protocol header on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            return sock.recv(1) == b"\x01"  # a method frame: Connection.Start
    except OSError:
        return False


class RabbitMQ:
    """The local RabbitMQ named by ``url``; started (and later stopped) only if it was down."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or LOOPBACK
        self.port = parts.port or 5672
        self.started_pid: int | None = None

    def ensure(self, timeout: float = 90.0) -> str | None:
        """None when the broker answers; otherwise why the rabbit column is unavailable."""
        if amqp_answers(self.host, self.port):
            return None
        local = self.host in (LOOPBACK, "localhost") and self.port == 5672
        if not local or shutil.which("rabbitmq-server") is None:
            return f"no AMQP broker answers on {self.host}:{self.port}"
        print("RabbitMQ is not running: starting it (rabbitmq-server -detached)", flush=True)
        started = subprocess.run(
            ["rabbitmq-server", "-detached"], capture_output=True, text=True, timeout=60
        )
        if started.returncode != 0:
            return f"rabbitmq-server -detached failed: {started.stderr.strip()[-300:]}"
        if not eventually(lambda: amqp_answers(self.host, self.port), timeout, 0.01, 0.25):
            return f"RabbitMQ did not answer on {self.host}:{self.port} within {timeout:.0f} s"
        self.started_pid = _rabbit_os_pid()
        return None

    def stop_if_started(self) -> None:
        """Stop the broker by PID if this run started it; a running one is left alone."""
        if self.started_pid is None:
            return
        pid, self.started_pid = self.started_pid, None
        try:
            os.kill(pid, signal.SIGTERM)  # the Erlang VM shuts down gracefully on SIGTERM
        except ProcessLookupError:
            return
        if not eventually(lambda: not _pid_alive(pid), 60.0, 0.01, 0.25):
            os.kill(pid, signal.SIGKILL)


def delete_rabbit_queues(url: str, names: list[str]) -> None:
    """Delete the queues a run made (oslo's rabbit driver leaves topic queues behind).

    Best effort: a queue that is gone already, or a broker that went away, is no error.
    """
    import kombu  # only for the rabbit column

    with kombu.Connection(url.replace("rabbit://", "amqp://", 1)) as connection:
        for name in names:
            try:
                with connection.channel() as channel:  # a failed delete closes its channel
                    channel.queue_delete(name)
            except Exception:  # noqa: BLE001, S112 - missing queue or broker gone: nothing to do
                continue


def _rabbit_os_pid() -> int | None:
    status = subprocess.run(["rabbitmqctl", "status"], capture_output=True, text=True, timeout=60)
    found = re.search(r"OS PID:\s*(\d+)", status.stdout)
    return int(found.group(1)) if found else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
