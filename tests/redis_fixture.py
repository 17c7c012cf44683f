"""A private ``redis-server`` for tests, on a free loopback port.

Tests never touch a shared Redis (such as 127.0.0.1:6379): each session
starts its own server in a temporary directory, without persistence, and
kills it by PID at the end. ``stop()``/``start()`` restart it on the same
port for outage tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

if TYPE_CHECKING:
    from tests.tls_fixture import TlsFiles

REDIS_SERVER = "/usr/bin/redis-server"
# The shared instance of the development machines: never ours.
SHARED_PORT = 6379
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def redis_server_binary() -> str:
    """Path of redis-server, or a test failure saying how to install it."""
    if os.access(REDIS_SERVER, os.X_OK):
        return REDIS_SERVER
    found = shutil.which("redis-server")
    if found:
        return found
    pytest.fail(
        f"redis-server not found ({REDIS_SERVER} nor on PATH): these tests start their own "
        "Redis; install it with 'apt-get install redis-server'",
        pytrace=False,
    )


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port != SHARED_PORT:
            return port


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail the test naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


class RedisServer:
    """One redis-server process; ``extra_args`` are added to its command line.

    With ``tls`` it serves TLS only (no plain port) and requires client certificates.
    """

    def __init__(
        self, directory: Path, extra_args: tuple[str, ...] = (), tls: TlsFiles | None = None
    ) -> None:
        self.directory = directory
        self.extra_args = extra_args
        self.tls = tls
        self.host = "127.0.0.1"
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
        wait_for(self._ready, START_TIMEOUT, f"redis-server on port {self.port} ({self._log()})")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """Stop the server by its PID (SIGKILL by default: an abrupt outage)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT)
        self.process = None

    def client(self, **kwargs) -> redis.Redis:
        """A plain redis-py client to inspect or prepare the server's data."""
        if self.tls:
            kwargs = {**self.tls.client_kwargs(), **kwargs}
        return redis.Redis(host=self.host, port=self.port, socket_timeout=5, **kwargs)

    def _ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            pytest.fail(f"redis-server on port {self.port} exited: {self._log()}", pytrace=False)
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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """This session's own redis-server; see the module docstring."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session's Redis, running and emptied (FLUSHALL) for this test."""
    # A previous test may have stopped it to simulate an outage.
    redis_server.start()
    with redis_server.client() as client:
        client.flushall()
    return redis_server.url
