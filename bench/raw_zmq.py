"""The floor: a raw pyzmq DEALER/ROUTER round trip, JSON on both sides.

    python -m bench.raw_zmq        # the echo server: prints "READY <port>", stops on SIGTERM

The client (``run``) runs in the benchmark's process: sequential round trips
at both payload sizes, then pipelined round trips with a window in flight.
No oslo.messaging, no acknowledgements, no matchmaker: what ZeroMQ plus JSON
costs on this machine.
"""

from __future__ import annotations

import faulthandler
import json
import signal
import time

import zmq

from bench.measure import LARGE, SMALL, Counts, Deadline, Result, latency_values
from bench.procs import LOOPBACK, StopRequest, start_children, stop_all

POLL_MS = 100
RECV_TIMEOUT_MS = 10_000


def serve() -> None:
    """Echo server: decode each request, encode a reply carrying its payload back."""
    stop = StopRequest()
    faulthandler.register(signal.SIGUSR1)  # the benchmark asks for stacks if we hang
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port(f"tcp://{LOOPBACK}")
    print(f"READY {port}", flush=True)
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    try:
        while not stop.requested:
            if not poller.poll(POLL_MS):
                continue
            while True:
                try:
                    identity, body = router.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                request = json.loads(body)
                reply = {"id": request["id"], "result": request["args"]["payload"]}
                router.send_multipart([identity, json.dumps(reply).encode()])
    finally:
        router.close()
        context.term()


def run(counts: Counts) -> Result:
    """All raw rows: the server in its own process, the client here."""
    (server,) = start_children([("bench.raw_zmq", [], "raw pyzmq server")], counts.start_cap)
    result = Result()
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVTIMEO, RECV_TIMEOUT_MS)
    try:
        port = int(server.ready_line.split()[1])
        dealer.connect(f"tcp://{LOOPBACK}:{port}")
        for prefix, size in (("lat_small", SMALL), ("lat_large", LARGE)):
            samples = sequential(dealer, "x" * size, counts, result, prefix)
            result.values.update(latency_values(prefix, samples))
        result.values["call_tput"] = _pipelined(dealer, counts, result)
    finally:
        dealer.close()
        context.term()
        stop_all([server])
    return result


def _round_trip(dealer: zmq.Socket, request_id: int, payload: str) -> None:
    request = {"method": "echo", "args": {"payload": payload}, "id": request_id}
    dealer.send(json.dumps(request).encode())
    reply = json.loads(dealer.recv())
    if reply["id"] != request_id or reply["result"] != payload:
        raise AssertionError(f"raw echo: unexpected reply to request {request_id}")


def sequential(
    dealer: zmq.Socket, payload: str, counts: Counts, result: Result, prefix: str
) -> list[float]:
    for i in range(counts.warmup):
        _round_trip(dealer, -1 - i, payload)
    samples: list[float] = []
    deadline = Deadline(counts.latency_cap)
    for i in range(counts.latency_calls):
        start = time.perf_counter()
        _round_trip(dealer, i, payload)
        samples.append(time.perf_counter() - start)
        if deadline.expired:
            result.notes.append(f"{prefix}: time cap hit after {len(samples)} round trips")
            break
    return samples


def _pipelined(dealer: zmq.Socket, counts: Counts, result: Result) -> float:
    """Round trips per second with up to ``raw_window`` requests in flight."""
    payload = "x" * SMALL
    sent = received = 0
    deadline = Deadline(counts.raw_cap)
    start = time.perf_counter()
    while received < counts.raw_pipelined:
        capped = deadline.expired
        while not capped and sent < counts.raw_pipelined and sent - received < counts.raw_window:
            request = {"method": "echo", "args": {"payload": payload}, "id": sent}
            dealer.send(json.dumps(request).encode())
            sent += 1
        if received == sent:
            break
        reply = json.loads(dealer.recv())
        if reply["result"] != payload:
            raise AssertionError("raw echo: unexpected pipelined reply")
        received += 1
    elapsed = time.perf_counter() - start
    if received < counts.raw_pipelined:
        result.notes.append(f"pipelined: time cap hit after {received} round trips")
    return received / elapsed


if __name__ == "__main__":
    serve()
