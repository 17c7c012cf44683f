"""The least a notification can cost its sender: oslo's Notifier plus one bare store write.

    python -m bench.studies.notify_floor [--count N]

``Notifier`` returns only once the store has the notification (doc/guarantees.md),
and the benchmark's notifier is one thread, so no driver with that promise
sends faster than 1 / (oslo's own cost per ``Notifier.info`` + one store
write). Measured here, in this process, one after the other:

* oslo's ``Notifier.info`` over a driver whose ``send_notification`` does nothing;
* the barest durable write of each store: one ``INSERT`` per transaction into a
  SQLite table in WAL mode with ``synchronous=NORMAL`` (as zmq:// stores), and one
  ``XADD`` round trip through redis-py to a private redis-server (zmq+redis://);
* oslo alone's notification rate (``bench.oslo_alone``), the ceiling the
  benchmark's target is a share of.

The sender's ceiling against that rate is the most any such driver could show
as "share of oslo alone" in the same run.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time

import oslo_messaging
import redis
from oslo_config import cfg
from oslo_messaging import transport as oslo_transport

from bench import oslo_alone
from harness.redis_server import RedisServer

PAYLOAD = {"data": "x" * 100}  # as bench/notify_bench.py sends
STORED = "y" * 400  # about what one such notification weighs once encoded


class _NothingDriver(oslo_alone.InProcessDriver):
    def send_notification(self, target, ctxt, message, version, retry=None):
        pass


def notifier_cost(count: int) -> float:
    """Seconds per ``Notifier.info`` when the driver does nothing."""
    transport = oslo_transport.NotificationTransport(_NothingDriver(cfg.CONF))
    notifier = oslo_messaging.Notifier(
        transport, publisher_id="bench", driver="messagingv2", topics=["floor"]
    )
    return _per_call(count, lambda: notifier.info({}, "bench.sample", PAYLOAD))


def sqlite_write_cost(directory: str, count: int) -> float:
    """Seconds per one-row transaction, WAL and synchronous=NORMAL."""
    conn = sqlite3.connect(os.path.join(directory, "floor.sqlite"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT, "
        "ts REAL, payload TEXT)"
    )

    def append() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO messages (stream, ts, payload) VALUES (?, ?, ?)",
            ("floor", time.time(), STORED),
        )
        conn.execute("COMMIT")

    try:
        return _per_call(count, append)
    finally:
        conn.close()


def redis_write_cost(directory: str, count: int) -> float:
    """Seconds per ``XADD`` round trip through redis-py, to a private redis-server."""
    server = RedisServer(directory)
    server.start()
    try:
        client = redis.Redis(host=server.host, port=server.port)
        return _per_call(count, lambda: client.xadd("floor", {"payload": STORED}))
    finally:
        server.stop()


def _per_call(count: int, fn) -> float:
    for _ in range(count // 10):  # warm-up
        fn()
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    args = parser.parse_args()
    cfg.CONF([], project="zmqdriver-bench", default_config_files=[])
    with tempfile.TemporaryDirectory(prefix="zmqdriver-floor-") as directory:
        notifier = notifier_cost(args.count)
        stores = {
            "zmq:// (SQLite)": sqlite_write_cost(directory, args.count),
            "zmq+redis:// (Redis)": redis_write_cost(directory, args.count),
        }
    ceiling = oslo_alone._notify_rate(args.count)
    print(f"oslo Notifier.info, driver doing nothing: {notifier * 1e6:.1f} us")
    print(f"oslo alone, notifications/s: {ceiling:,.0f}/s")
    for name, write in stores.items():
        rate = 1 / (notifier + write)
        print(
            f"{name}: bare store write {write * 1e6:.1f} us; sender at most {rate:,.0f}/s, "
            f"{rate / ceiling:.0%} of oslo alone"
        )


if __name__ == "__main__":
    main()
