"""How many casts/s oslo.messaging itself allows, with its in-process ``fake://`` driver.

    python -m bench.oslo_floor [--casts 20000]

No sockets and no second process: an RPC server (threading executor) and a
client share this process, and the fake driver hands messages over through
in-memory queues. What remains is oslo.messaging's own work per cast
(``RPCClient.cast``, the executor hand-off, the dispatcher, ``reply()``): a
ceiling for any driver on this machine, one process and one GIL.
"""

from __future__ import annotations

import argparse
import threading
import time
import warnings

warnings.simplefilter("ignore")  # eventlet's deprecation notice, imported by oslo libraries

import oslo_messaging  # noqa: E402
from oslo_config import cfg  # noqa: E402


class Counter:
    def __init__(self, wanted: int) -> None:
        self.count = 0
        self.wanted = wanted
        self.all_arrived = threading.Event()

    def sink(self, ctxt: dict, payload: str) -> None:
        self.count += 1  # one executor thread at a time is enough for a count here
        if self.count >= self.wanted:
            self.all_arrived.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--casts", type=int, default=20000)
    args = parser.parse_args()
    cfg.CONF([], project="zmqdriver-bench", default_config_files=[])
    transport = oslo_messaging.get_rpc_transport(cfg.CONF, url="fake://")
    counter = Counter(args.casts)
    target = oslo_messaging.Target(topic="floor", server="one")
    server = oslo_messaging.get_rpc_server(transport, target, [counter], executor="threading")
    server.start()
    client = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic="floor"))
    try:
        start = time.perf_counter()
        for _ in range(args.casts):
            client.cast({}, "sink", payload="x" * 100)
        if not counter.all_arrived.wait(120):
            raise SystemExit(f"only {counter.count} of {args.casts} casts arrived")
        elapsed = time.perf_counter() - start
        print(f"fake:// casts/s until the server has all, 1 thread: {args.casts / elapsed:,.0f}/s")
    finally:
        server.stop()
        server.wait()
        transport.cleanup()


if __name__ == "__main__":
    main()
