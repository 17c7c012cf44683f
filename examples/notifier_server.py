#!/usr/bin/env python3
"""A notification listener using only oslo.messaging's public API.

    examples/notifier_server.py --config-file config/driver_zmq.conf [--pool P] [--run-for S]

Prints every info notification of --topic until interrupted (or for --run-for seconds).
"""

from __future__ import annotations

import os
import sys
import threading

# isort: off
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_config, run, serve_until_stopped  # noqa: E402  (first: it quiets dependency warnings)

import oslo_messaging  # noqa: E402
from oslo_config import cfg  # noqa: E402
# isort: on


class PrintingEndpoint:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # notifications are handled by several threads

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        with self._lock:
            print(f"{publisher_id} {event_type} {payload}", flush=True)


def main() -> None:
    conf = load_config(
        [
            cfg.StrOpt("pool", help="Listener pool: each pool gets every notification once."),
            cfg.FloatOpt("run-for", help="Stop after this many seconds."),
        ]
    )
    transport = oslo_messaging.get_notification_transport(conf)
    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=conf.topic)], [PrintingEndpoint()], pool=conf.pool
    )
    serve_until_stopped(listener, transport, conf.run_for)


if __name__ == "__main__":
    run(main)
