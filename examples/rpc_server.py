#!/usr/bin/env python3
"""An RPC server using only oslo.messaging's public API.

    examples/rpc_server.py --config-file config/driver_zmq.conf [--topic T] [--server S]

Serves ``echo``, ``add`` and ``count`` until interrupted (or for --run-for seconds).
"""

from __future__ import annotations

import os
import sys

# isort: off
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_config, run, serve_until_stopped  # noqa: E402  (first: it quiets dependency warnings)

import oslo_messaging  # noqa: E402
from oslo_config import cfg  # noqa: E402
# isort: on


class DemoEndpoint:
    def __init__(self, name: str) -> None:
        self.name = name
        self.casts = 0

    def echo(self, ctxt, value):
        return f"{value} (from {self.name})"

    def add(self, ctxt, a, b):
        return a + b

    def count(self, ctxt):
        self.casts += 1
        print(f"{self.name}: cast #{self.casts}", flush=True)


def main() -> None:
    conf = load_config([cfg.FloatOpt("run-for", help="Stop after this many seconds.")])
    transport = oslo_messaging.get_rpc_transport(conf)
    target = oslo_messaging.Target(topic=conf.topic, server=conf.server)
    server = oslo_messaging.get_rpc_server(transport, target, [DemoEndpoint(conf.server)])
    ready = f"server {conf.server} ready on topic {conf.topic}"
    serve_until_stopped(server, transport, conf.run_for, ready)


if __name__ == "__main__":
    run(main)
