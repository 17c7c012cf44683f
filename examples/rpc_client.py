#!/usr/bin/env python3
"""An RPC client using only oslo.messaging's public API.

    examples/rpc_client.py --config-file config/driver_zmq.conf [--value hello] [--casts N]

Calls ``echo`` and prints the reply; with --casts N it also casts N times.
"""

from __future__ import annotations

import os
import sys

# isort: off
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_config, run  # noqa: E402  (first: it quiets dependency warnings)

import oslo_messaging  # noqa: E402
from oslo_config import cfg  # noqa: E402
# isort: on


def main() -> None:
    conf = load_config(
        [
            cfg.StrOpt("value", default="hello", help="Value to echo."),
            cfg.IntOpt("casts", default=0, help="Number of casts to send to 'count'."),
            cfg.BoolOpt("direct", default=False, help="Call the server named by --server."),
            cfg.FloatOpt("timeout", default=30.0, help="Call timeout in seconds."),
        ]
    )
    transport = oslo_messaging.get_rpc_transport(conf)
    target = oslo_messaging.Target(topic=conf.topic, server=conf.server if conf.direct else None)
    client = oslo_messaging.get_rpc_client(transport, target, timeout=conf.timeout)
    print(client.call({}, "echo", value=conf.value), flush=True)
    for _ in range(conf.casts):
        client.cast({}, "count")
    if conf.casts:
        print(f"sent {conf.casts} casts", flush=True)
    transport.cleanup()


if __name__ == "__main__":
    run(main)
