"""What the threading model costs: a round trip with and without the I/O-loop hand-off.

    python -m bench.studies.handoff [--count N]

Both variants talk to the raw echo server of ``bench.raw_zmq`` (another
process), with the same frames:

* direct: the caller thread owns a DEALER and sends/receives itself;
* loop:   the caller hands the send to zmqdriver's IoLoop (one native thread
          owning the socket) and waits for the reply it routes back, as the
          driver does for every call.

The difference is the price of "one owner per socket" with callers on other
threads; doc/architecture.md records it.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import time

import zmq

from bench.procs import start_children, stop_all
from zmqdriver.eventloop import IoLoop
from zmqdriver.eventloop.native import NativeRuntime

PAYLOAD = "x" * 100


def _request(i: int) -> bytes:
    return json.dumps({"id": i, "args": {"payload": PAYLOAD}}).encode()


def direct(port: int, count: int) -> list[float]:
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    times = []
    for i in range(count):
        start = time.perf_counter()
        dealer.send(_request(i))
        json.loads(dealer.recv())
        times.append(time.perf_counter() - start)
    context.destroy(linger=0)
    return times


def through_loop(port: int, count: int) -> list[float]:
    context = zmq.Context()
    loop = IoLoop(NativeRuntime(), name="handoff-bench")
    replies: queue.Queue = queue.Queue()

    def open_dealer() -> zmq.Socket:
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(f"tcp://127.0.0.1:{port}")
        loop.add_reader(dealer, lambda frames: replies.put(json.loads(frames[0])))
        return dealer

    dealer = loop.call(open_dealer)
    times = []
    for i in range(count):
        start = time.perf_counter()
        loop.submit(dealer.send, _request(i))
        replies.get(timeout=10)
        times.append(time.perf_counter() - start)
    loop.stop()
    context.destroy(linger=0)
    return times


def _summary(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[int(len(ordered) * 0.99)] * 1000
    return f"| {name:<28} | {p50:8.3f} ms | {p99:8.3f} ms |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    args = parser.parse_args()
    (server,) = start_children([("bench.raw_zmq", [], "raw pyzmq server")], 30)
    try:
        port = int(server.ready_line.split()[1])
        direct(port, 200)  # warm up both paths
        through_loop(port, 200)
        rows = [
            _summary("direct (caller owns socket)", direct(port, args.count)),
            _summary("through the I/O loop", through_loop(port, args.count)),
        ]
    finally:
        stop_all([server])
    print("| round trip, 100 B, sequential |      p50    |      p99    |")
    print("|------------------------------|------------:|------------:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
