"""A private ``redis-server`` on a free loopback port, stopped by its PID.

Nothing here touches a shared Redis (such as 127.0.0.1:6379): each server runs in a
directory of its own, without persistence. ``stop()``/``start()`` restart it on the same
port, for outage tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Protocol

import redis

from harness.net import LOOPBACK, free_port
from harness.process import stop_process
from harness.wait import eventually

REDIS_SERVER = "/usr/bin/redis-server"
START_TIMEOUT = 30.0


class RedisServerError(RuntimeError):
    """redis-server is missing, did not start or exited."""


class TlsFiles(Protocol):
    """The TLS material a server serves with and a client presents (tests/tls_fixture.py)."""

    ca: Path
    client_cert: Path
    client_key: Path

    def redis_args(self, port: int) -> tuple[str, ...]: ...

    def client_kwargs(self) -> dict[str, object]: ...


def redis_server_binary() -> str:
    """Path of redis-server; RedisServerError saying how to install it if there is none."""
    if os.access(REDIS_SERVER, os.X_OK):
        return REDIS_SERVER
    found = shutil.which("redis-server")
    if found:
        return found
    raise RedisServerError(
        f"redis-server not found ({REDIS_SERVER} nor on PATH); "
        "install it with 'apt-get install redis-server'"
    )


class RedisServer:
    """One redis-server process; ``extra_args`` are added to its command line.

    With ``tls`` it serves TLS only (no plain port) and requires client certificates.
    """

    def __init__(
        self,
        directory: str | Path,
        extra_args: tuple[str, ...] = (),
        tls: TlsFiles | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.extra_args = extra_args
        self.tls = tls
        self.host = LOOPBACK
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"zmq+redis://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self) -> Path:
        return self.directory / f"redis-{self.port}.log"

    def start(self) -> None:
        """Start the server (again on the same port) and wait until it answers PING."""
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        listen = self.tls.redis_args(self.port) if self.tls else ("--port", str(self.port))
        command = [
            redis_server_binary(),
            *listen,
            "--bind", self.host,
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", str(self.log_path),
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        self.wait_ready(f"redis-server on port {self.port}")

    def wait_ready(self, what: str) -> None:
        """Wait until the process answers PING; RedisServerError (and stopped) if it does not."""
        if not eventually(self._ready, START_TIMEOUT, poll=0.01, max_poll=0.2):
            self.stop()
            raise RedisServerError(f"{what} did not answer in {START_TIMEOUT:.0f} s: {self._log()}")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Stop the server by its PID (SIGKILL by default: an abrupt outage)."""
        stop_process(self.process, sig)
        self.process = None

    def client(self, **kwargs) -> redis.Redis:
        """A plain redis-py client to inspect or prepare the server's data."""
        if self.tls:
            kwargs = {**self.tls.client_kwargs(), **kwargs}
        return redis.Redis(host=self.host, port=self.port, socket_timeout=5, **kwargs)

    def _ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RedisServerError(f"redis-server on port {self.port} exited: {self._log()}")
        # Any RESP reply (+PONG, or -NOAUTH with requirepass) means it serves.
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                with self._wrap(sock) as stream:
                    stream.sendall(b"PING\r\n")
                    return stream.recv(64)[:1] in (b"+", b"-")
        except OSError:
            return False

    def _wrap(self, sock: socket.socket) -> socket.socket:
        """``sock`` itself, or wrapped in TLS (with the client certificate) for a TLS server."""
        if not self.tls:
            return sock
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        return context.wrap_socket(sock, server_hostname=self.host)

    def _log(self) -> str:
        try:
            return self.log_path.read_text()[-2000:] or "empty log"
        except OSError:
            return f"no log at {self.log_path}"
