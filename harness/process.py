"""Stopping a server process the tests started, by its PID."""

from __future__ import annotations

import os
import signal
import subprocess

STOP_TIMEOUT = 10.0


def stop_process(process: subprocess.Popen | None, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to ``process`` (if it still runs) and reap it; SIGKILL if it lingers."""
    if process is None or process.poll() is not None:
        return
    os.kill(process.pid, sig)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT)
