"""Where a call's time goes: timestamps at each hand-over, client and server.

    python -m bench.studies.call_timeline [--calls 1000] [--caller-sockets 0]

A zmq:// RPC server runs in its own process (threading executor), the client
here makes sequential 100 B calls. Both wrap a few driver methods so each
records ``time.monotonic()`` (one clock for all processes on Linux) when it
runs: the caller handing the request to the I/O thread, that thread sending
it, the server's I/O thread reading it, sending the ACK, handing it to the
executor, the endpoint running, the reply leaving (from the executor thread
while the server's I/O thread is idle), the client's I/O thread reading the
ACK and the reply, the caller waking. A lone call goes on its thread's own
connection (rpc/lines.py), with no client I/O thread in its path: the caller
sends it and reads the reply itself; ``--caller-sockets 0`` makes it go
through the I/O thread instead. The table gives the median time
between consecutive points, over the calls whose points came in the most
common order. Each point costs about a
microsecond, so the sum is a little above an untraced call.

For reading, not for the test suite: it wraps private methods by name.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
import time

import oslo_messaging
from oslo_config import cfg

from bench.config import loopback_config
from bench.procs import StopRequest, start_children, stop_all
from zmqdriver.rpc import lines, outbox, server

WARMUP = 200
PAYLOAD = "x" * 100

# (class, method, label): the label is recorded when the method is entered.
CLIENT_POINTS = [
    (outbox.Outbox, "send", "caller hands the request to the I/O thread"),
    (outbox.Outbox, "_send", "client I/O thread sends it"),
    (outbox.Outbox, "_on_response", "client I/O thread reads an answer"),
    (outbox.Waiter, "put", "client I/O thread hands the reply to the caller"),
    (lines.CallerLine, "send", "caller sends it on its own connection"),
]
SERVER_POINTS = [
    (server.Inbox, "_on_request", "server I/O thread reads the request"),
    (server.Inbox, "send", "server I/O thread sends (ACK)"),
    (server.Inbox, "_dispatch", "server I/O thread hands it to the executor"),
    (server.ZmqIncomingMessage, "reply", "endpoint returned, reply encoded"),
    # The executor thread sends it while the loop is idle (a busy loop sends it itself).
    (server.Inbox, "_send_now", "server sends the reply"),
]
CALL_START, CALLER_WOKEN, CALL_END = "call starts", "caller woken", "call returns"
LINE_ANSWER = "caller reads the reply on its own connection"
ENDPOINT = "executor thread runs the endpoint"


class Recorder:
    """(label, time) pairs, appended from any thread (list.append is atomic)."""

    def __init__(self) -> None:
        self.points: list[tuple[str, float]] = []

    def mark(self, label: str) -> None:
        self.points.append((label, time.monotonic()))

    def wrap(self, cls, method: str, label: str) -> None:
        """Mark ``label`` when ``cls.method`` is entered."""
        original = getattr(cls, method)

        def marked(*args, **kwargs):
            self.mark(label)
            return original(*args, **kwargs)

        setattr(cls, method, marked)

    def wrap_return(self, cls, method: str, label: str) -> None:
        """Mark ``label`` when ``cls.method`` returns."""
        original = getattr(cls, method)

        def marked(*args, **kwargs):
            result = original(*args, **kwargs)
            self.mark(label)
            return result

        setattr(cls, method, marked)


def serve(config: str, out: str) -> None:
    """The server process: serve until SIGTERM, then write the points to ``out``."""
    recorder = Recorder()
    for cls, method, label in SERVER_POINTS:
        recorder.wrap(cls, method, label)

    class Echo:
        def echo(self, ctxt: dict, payload: str) -> str:
            recorder.mark(ENDPOINT)
            return payload

    cfg.CONF(["--config-file", config], project="zmqdriver-bench", default_config_files=[])
    transport = oslo_messaging.get_rpc_transport(cfg.CONF, url="zmq://")
    target = oslo_messaging.Target(topic="timeline", server="one")
    rpc_server = oslo_messaging.get_rpc_server(transport, target, [Echo()], executor="threading")
    stop = StopRequest()
    rpc_server.start()
    print("READY", flush=True)
    try:
        while not stop.wait(0.1):
            pass
    finally:
        rpc_server.stop()
        rpc_server.wait()
        transport.cleanup()
        with open(out, "w") as handle:
            json.dump(recorder.points, handle)


def call(config: str, calls: int) -> list[tuple[str, float]]:
    """This process's points over ``calls`` sequential calls (after a warm-up)."""
    recorder = Recorder()
    for cls, method, label in CLIENT_POINTS:
        recorder.wrap(cls, method, label)
    recorder.wrap_return(outbox.Waiter, "get", CALLER_WOKEN)
    recorder.wrap_return(lines.CallerLine, "get", LINE_ANSWER)
    cfg.CONF(["--config-file", config], project="zmqdriver-bench", default_config_files=[])
    transport = oslo_messaging.get_rpc_transport(cfg.CONF, url="zmq://")
    target = oslo_messaging.Target(topic="timeline", server="one")
    client = oslo_messaging.get_rpc_client(transport, target, timeout=30)
    try:
        for _ in range(WARMUP):
            client.call({}, "echo", payload=PAYLOAD)
        recorder.points.clear()
        for _ in range(calls):
            recorder.mark(CALL_START)
            client.call({}, "echo", payload=PAYLOAD)
            recorder.mark(CALL_END)
    finally:
        transport.cleanup()
    return recorder.points


def steps(points: list[tuple[str, float]]) -> tuple[int, int, list[tuple[str, str, float]]]:
    """(calls, calls in the common order, [(from, to, median µs)]) from all points."""
    calls: list[list[tuple[str, float]]] = []
    current: list[tuple[str, float]] | None = None
    for label, at in sorted(points, key=lambda point: point[1]):
        if label == CALL_START:
            current = [(label, at)]
        elif current is not None:
            current.append((label, at))
            if label == CALL_END:
                calls.append(current)
                current = None
    orders = collections.Counter(tuple(label for label, _ in c) for c in calls)
    common = orders.most_common(1)[0][0]
    kept = [c for c in calls if tuple(label for label, _ in c) == common]
    gaps: list[tuple[str, str, float]] = []
    for i in range(len(common) - 1):
        micros = [(c[i + 1][1] - c[i][1]) * 1e6 for c in kept]
        gaps.append((common[i], common[i + 1], statistics.median(micros)))
    return len(calls), len(kept), gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument(
        "--caller-sockets", type=int, default=None, help="zmq_caller_sockets (0: no lines)"
    )
    parser.add_argument("--serve", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(*args.serve)
    with tempfile.TemporaryDirectory(prefix="zmqdriver-timeline-") as workdir:
        options = {} if args.caller_sockets is None else {"zmq_caller_sockets": args.caller_sockets}
        config = loopback_config(workdir, **options)
        out = os.path.join(workdir, "server-points.json")
        children = start_children(
            [("bench.studies.call_timeline", ["--serve", config, out], "server")], 60
        )
        try:
            points = call(config, args.calls)
        finally:
            stop_all(children)
        with open(out) as handle:
            points += [tuple(point) for point in json.load(handle)]
    total, kept, gaps = steps(points)
    print(f"{total} calls, {kept} with the points in the most common order; median µs per step:\n")
    print("| from | to | median |\n|---|---|---:|")
    for start, end, micros in gaps:
        print(f"| {start} | {end} | {micros:.0f} µs |")
    print(f"| | **sum of the medians** | **{sum(m for _, _, m in gaps):.0f} µs** |")


if __name__ == "__main__":
    main()
