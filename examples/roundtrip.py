#!/usr/bin/env python3
"""README command 1: start a server, call it, print the reply, stop it.

Uses config/driver_zmq.conf (the embedded matchmaker) unless another
--config-file is given; the server runs in its own process.
"""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, os.pardir, "config", "driver_zmq.conf")


def main() -> int:
    args = sys.argv[1:] or ["--config-file", DEFAULT_CONFIG]
    topic = ["--topic", f"roundtrip-{os.getpid()}"]
    server = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "rpc_server.py"), *args, *topic],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready = server.stdout.readline().strip()  # "server ... ready"
        if not ready:  # it failed, and said why on stderr
            return server.wait(30) or 1
        print(ready, flush=True)
        client = subprocess.run(
            [sys.executable, os.path.join(HERE, "rpc_client.py"), *args, *topic],
            timeout=120,
        )
        return client.returncode
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    sys.exit(main())
