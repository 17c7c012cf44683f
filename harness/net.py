"""The loopback address everything here binds to, and free ports on it."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"
# The shared Redis of the development machines: never ours, never offered as free.
SHARED_REDIS_PORT = 6379


def free_port() -> int:
    """A loopback TCP port nothing listens on right now (never the shared Redis port)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
        if port != SHARED_REDIS_PORT:
            return port
