"""An oslo.messaging RPC server process of the benchmark (threading or eventlet executor).

    python -m bench.rpc_server --config-file F --url URL --topic T --server S
    python -m harness.green bench.rpc_server --executor eventlet ...   # monkey-patched

Prints "READY <server>" once serving and stops gracefully on SIGTERM (SIGUSR1
prints every thread's stack to stderr). The
endpoint echoes calls and counts casts per tag, remembering when the last one
arrived (time.monotonic(): one system-wide clock on Linux, so the client can
compare it with its own start time).
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


class BenchEndpoint:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._last: dict[str, float] = {}

    def echo(self, ctxt: dict, payload: str) -> str:
        return payload

    def sink(self, ctxt: dict, tag: str, payload: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._counts[tag] = self._counts.get(tag, 0) + 1
            self._last[tag] = max(now, self._last.get(tag, now))

    def received(self, ctxt: dict, tag: str) -> list[float]:
        """[number of casts of ``tag`` received, monotonic time of the last one]."""
        with self._lock:
            return [self._counts.get(tag, 0), self._last.get(tag, 0.0)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--executor", default="threading", choices=["threading", "eventlet"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--server", required=True)
    args = parser.parse_args()
    faulthandler.register(signal.SIGUSR1)  # the benchmark asks for stacks if we hang

    logging.basicConfig(level=logging.WARNING, format="server: %(levelname)s %(name)s: %(message)s")
    # The amqp library warns about frames racing a closing channel at every shutdown: noise.
    logging.getLogger("amqp").setLevel(logging.ERROR)
    cfg.CONF(["--config-file", args.config_file])
    transport = oslo_messaging.get_rpc_transport(cfg.CONF, url=args.url)
    target = oslo_messaging.Target(topic=args.topic, server=args.server)
    server = oslo_messaging.get_rpc_server(
        transport, target, [BenchEndpoint()], executor=args.executor
    )
    stop = StopRequest()
    server.start()
    try:
        print(f"READY {args.server}", flush=True)
        while not stop.wait(0.1):
            pass
    finally:
        server.stop()
        server.wait()
        transport.cleanup()


if __name__ == "__main__":
    main()
