"""A notification listener process of the benchmark (threading or eventlet executor).

    python -m bench.notify_listener --config-file F --url URL --topic T --drain-cap S
    python -m harness.green bench.notify_listener --executor eventlet ...   # monkey-patched

Prints "READY" once listening and stops gracefully on SIGTERM (SIGUSR1 prints
every thread's stack to stderr). The endpoint counts ``info`` notifications
per tag, remembering when the last one arrived (time.monotonic(): one
system-wide clock on Linux, as in bench/rpc_server.py). The sender ends each
batch with one ``bench.end`` notification naming how many it sent; once the
listener has that many of the tag, or ``--drain-cap`` seconds after the end
marker arrived, it prints

    DONE <tag> <received> <monotonic time of the last arrival>
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import threading
import time

import oslo_messaging
from oslo_config import cfg

from bench.procs import StopRequest

END_EVENT = "bench.end"


class CountingEndpoint:
    def __init__(self, drain_cap: float) -> None:
        self._drain_cap = drain_cap
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._last: dict[str, float] = {}
        self._expected: dict[str, tuple[int, float]] = {}  # tag -> (sent, give-up time)

    def info(self, ctxt, publisher_id, event_type, payload, metadata) -> None:
        now = time.monotonic()
        tag = payload["tag"]
        with self._lock:
            if event_type == END_EVENT:
                self._expected[tag] = (int(payload["sent"]), now + self._drain_cap)
            else:
                self._counts[tag] = self._counts.get(tag, 0) + 1
                self._last[tag] = max(now, self._last.get(tag, now))
            self._report(now)

    def check(self) -> None:
        """Report tags whose drain cap has passed (called periodically by the main thread)."""
        with self._lock:
            self._report(time.monotonic())

    def _report(self, now: float) -> None:
        for tag, (sent, give_up) in list(self._expected.items()):
            received = self._counts.get(tag, 0)
            if received >= sent or now >= give_up:
                del self._expected[tag]
                print(f"DONE {tag} {received} {self._last.get(tag, 0.0)!r}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--executor", default="threading", choices=["threading", "eventlet"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--drain-cap", type=float, required=True)
    args = parser.parse_args()
    faulthandler.register(signal.SIGUSR1)  # the benchmark asks for stacks if we hang

    logging.basicConfig(
        level=logging.WARNING, format="listener: %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("amqp").setLevel(logging.ERROR)  # shutdown noise, as in rpc_server
    cfg.CONF(["--config-file", args.config_file])
    transport = oslo_messaging.get_notification_transport(cfg.CONF, url=args.url)
    endpoint = CountingEndpoint(args.drain_cap)
    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=args.topic)], [endpoint], executor=args.executor
    )
    stop = StopRequest()
    listener.start()
    try:
        print("READY", flush=True)
        while not stop.wait(0.1):
            endpoint.check()
    finally:
        listener.stop()
        listener.wait()
        transport.cleanup()


if __name__ == "__main__":
    main()
