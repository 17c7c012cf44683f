#!/usr/bin/env python3
"""Send notifications using only oslo.messaging's public API.

    examples/notifier_client.py --config-file config/driver_zmq.conf [--count N] [--topic T]

Works whether or not a listener runs: notifications are stored until one reads them.
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
    conf = load_config([cfg.IntOpt("count", default=3, help="Notifications to send.")])
    transport = oslo_messaging.get_notification_transport(conf)
    notifier = oslo_messaging.Notifier(
        transport, publisher_id="demo.client", driver="messagingv2", topics=[conf.topic]
    )
    for n in range(conf.count):
        notifier.info({}, "demo.event", {"n": n})
    print(f"sent {conf.count} notifications on topic {conf.topic}", flush=True)
    transport.cleanup()


if __name__ == "__main__":
    run(main)
