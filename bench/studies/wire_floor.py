"""The most a ZeroMQ driver's RPC server could deliver: oslo's server behind the barest wire.

    python -m bench.studies.wire_floor [--rounds N] [--casts N] [--calls N] [--windows 16,64]
        [--quick]

`oslo alone` (bench/oslo_alone.py) hands ready-made requests to oslo's RPC
server from a thread of the server's own process. A driver cannot: each request
crosses a socket from another process on the same two cores. This study puts
the cheapest such crossing under the same oslo server, so its rates bound any
ZeroMQ driver on this machine from above:

* the server process: one ROUTER; one thread receives each request (one
  ``recv_multipart``, one ``json.loads``) and hands it to oslo's server with the
  threading executor, as `oslo alone`'s feeder does. No acknowledgements, no
  DONE, no de-duplication, no matchmaker: none of the promises of
  doc/guarantees.md. A call's reply is sent by the executor thread that ran it,
  on the ROUTER, under a lock.
* the client: raw pyzmq with pre-encoded requests and no oslo client at all;
  casts from one thread back to back, calls from 8 threads, each on a DEALER of
  its own, one call at a time, and sequential calls from one thread for the
  latency (the benchmark's rows, minus their client cost). Casts also with a
  window (``--windows``, as ``zmq_cast_window``): at most that many sent whose
  answer, sent by the executor thread once the cast ran, has not come back;
  what a driver keeping the window's promise could reach. Fanout as the
  benchmark's row: each cast to three such servers, from one thread taking
  turns at their DEALERs, back to back and with each window.

Each round measures `oslo alone`, raw pyzmq's round trip (bench/raw_zmq.py) and
the wire floor one after the other, and prints the floor against the
performance issue's targets: casts 70 % and calls/s 50 % of `oslo alone`,
call p50 at most `oslo alone`'s p50 + 1.5 x raw pyzmq's, fanout 60 % of the
bound the benchmark computes (the cast rate times the cores the servers can use).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import threading
import time

import zmq
from oslo_config import cfg

from bench import oslo_alone, raw_zmq
from bench.measure import FULL, QUICK, SMALL, Counts, Result, percentile
from bench.oslo_alone import InProcessDriver, _Echo, _Request, _rpc_server, _serving
from bench.procs import start_children, stop_all

WAIT = 60.0  # seconds: generous bound on any single wait here
CALL_THREADS = 8
FANOUT_SERVERS = 3  # as the benchmark's fanout row


def _request(method: str, **args) -> list[bytes]:
    """A request's frames as a driver would send them: a 16-byte id and a JSON body."""
    body = {"ctxt": {}, "message": {"method": method, "args": args, "version": "1.0"}}
    return [os.urandom(16), json.dumps(body).encode()]


# -- the server process ----------------------------------------------------------


def serve(wanted: int) -> None:
    """Serve ``wanted`` requests (warm-up included) on a ROUTER; print the port, then
    the monotonic time at which the last one had run."""
    cfg.CONF([], project="zmqdriver-bench", default_config_files=[])
    endpoint = _Echo(wanted)
    driver = InProcessDriver(cfg.CONF)
    _, server = _rpc_server(driver, endpoint)
    router = zmq.Context.instance().socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    lock = threading.Lock()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)

    def replier(identity: bytes):
        def on_reply(reply, failure) -> None:
            with lock:
                router.send_multipart([identity, json.dumps({"result": reply}).encode()])
                waiting = router.get(zmq.EVENTS) & zmq.POLLIN
            endpoint._arrived()
            if waiting:  # the send may have taken the descriptor's signal
                os.write(wake_w, b"x")

        return on_reply

    with _serving(server):
        callback = driver.listener.on_incoming_callback
        threading.Thread(target=_report, args=(endpoint,), daemon=True).start()
        print(port, flush=True)
        poller = select.epoll()
        poller.register(router.getsockopt(zmq.FD), select.EPOLLIN)
        poller.register(wake_r, select.EPOLLIN)
        while True:
            while True:
                with lock:
                    if not router.get(zmq.EVENTS) & zmq.POLLIN:
                        break
                    identity, _, body = router.recv_multipart()
                request = json.loads(body)
                callback([_Request(request["message"], "x", replier(identity))])
            for fd, _ in poller.poll():
                if fd == wake_r:
                    os.read(wake_r, 4096)


def _report(endpoint: _Echo) -> None:
    if endpoint.all_arrived.wait(WAIT * 10):
        print(time.monotonic(), flush=True)


# -- the client ------------------------------------------------------------------


class _Server:
    """A wire-floor server process expecting ``wanted`` requests."""

    def __init__(self, wanted: int) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.studies.wire_floor", "--serve", str(wanted)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.uri = f"tcp://127.0.0.1:{self._process.stdout.readline().strip()}"

    def last_run_at(self) -> float:
        line = self._process.stdout.readline().strip()
        if not line:
            raise RuntimeError("the wire-floor server ended before every request ran")
        return float(line)

    def stop(self) -> None:
        self._process.kill()
        self._process.wait()


def _dealer(uri: str) -> zmq.Socket:
    """A client DEALER connected to ``uri`` whose receives give up after WAIT."""
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVTIMEO, int(WAIT * 1000))
    dealer.connect(uri)
    return dealer


def cast_rate(casts: int, warmup: int, window: int | None = None, servers: int = 1) -> float:
    """Deliveries/s from the first send until every server has run the last cast.

    Each cast goes to each of ``servers`` (more than one: fanout, the client's
    sends taking turns). ``window``: at most this many casts sent to a server
    and not reported run, as with ``zmq_cast_window``. The server's answer to
    each cast, sent by the executor thread as soon as it ran, stands for the
    DONE: the promptest a driver's could be. ``None``: back to back, answers unread.
    """
    started = [_Server(warmup + casts) for _ in range(servers)]
    dealers = [_dealer(server.uri) for server in started]
    frames = _request("sink", payload="x" * SMALL)
    sends = [d.send_multipart if window is None else _windowed(d, window) for d in dealers]
    try:
        for _ in range(warmup):
            for send in sends:
                send(frames)
        time.sleep(1.0)  # let the warm-up run first (not timed)
        start = time.monotonic()
        for _ in range(casts):
            for send in sends:
                send(frames)
        last = max(server.last_run_at() for server in started)
        return servers * casts / (last - start)
    finally:
        for dealer in dealers:
            dealer.close()
        for server in started:
            server.stop()


def _windowed(dealer: zmq.Socket, window: int):
    """A send that first waits until fewer than ``window`` casts await their answer."""
    waiting = 0

    def send(frames: list[bytes]) -> None:
        nonlocal waiting
        while waiting:  # take every answer already here, without waiting
            try:
                dealer.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            waiting -= 1
        while waiting >= window:
            dealer.recv()
            waiting -= 1
        dealer.send_multipart(frames)
        waiting += 1

    return send


def call_rate(calls: int, warmup: int) -> float:
    """Calls/s of CALL_THREADS threads, each on its own DEALER, one call at a time."""
    server = _Server(warmup + calls)
    per_thread = calls // CALL_THREADS
    ready = threading.Barrier(CALL_THREADS + 1)
    frames = _request("echo", payload="x" * SMALL)

    def caller() -> None:
        dealer = _dealer(server.uri)
        for _ in range(warmup // CALL_THREADS):
            dealer.send_multipart(frames)
            dealer.recv()
        ready.wait()
        for _ in range(per_thread):
            dealer.send_multipart(frames)
            dealer.recv()
        dealer.close()

    threads = [threading.Thread(target=caller, daemon=True) for _ in range(CALL_THREADS)]
    try:
        for thread in threads:
            thread.start()
        ready.wait(WAIT)
        start = time.perf_counter()
        for thread in threads:
            thread.join(WAIT)
        return per_thread * CALL_THREADS / (time.perf_counter() - start)
    finally:
        server.stop()


def call_p50(calls: int, warmup: int) -> float:
    """Milliseconds: the median of sequential calls from one thread."""
    server = _Server(warmup + calls)
    dealer = _dealer(server.uri)
    frames = _request("echo", payload="x" * SMALL)
    samples = []
    try:
        for number in range(warmup + calls):
            start = time.perf_counter()
            dealer.send_multipart(frames)
            dealer.recv()
            if number >= warmup:
                samples.append(time.perf_counter() - start)
        return percentile(samples, 50) * 1000.0
    finally:
        dealer.close()
        server.stop()


def latencies(counts: Counts) -> tuple[float, float]:
    """Milliseconds: oslo alone's call p50 and raw pyzmq's round trip p50 (100 B)."""
    alone = Result()
    oslo_alone._latency(counts, alone)
    (server,) = start_children([("bench.raw_zmq", [], "raw pyzmq server")], counts.start_cap)
    dealer = _dealer(f"tcp://127.0.0.1:{server.ready_line.split()[1]}")
    try:
        samples = raw_zmq.sequential(dealer, "x" * SMALL, counts, Result(), "raw")
    finally:
        dealer.close()
        stop_all([server])
    return alone.values["lat_small_p50"], percentile(samples, 50) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--casts", type=int, default=20000)
    parser.add_argument("--calls", type=int, default=16000)
    parser.add_argument(
        "--windows",
        default="16,64",
        type=lambda text: [int(w) for w in text.split(",") if w],
        help="cast windows to measure the floor at too (comma-separated; empty: none)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    cfg.CONF([], project="zmqdriver-bench", default_config_files=[])
    counts = QUICK if args.quick else FULL
    if args.quick:
        args.casts, args.calls = counts.casts, counts.throughput_calls
    for number in range(1, args.rounds + 1):
        alone_casts = oslo_alone._rpc_rate("sink", args.casts)
        floor_casts = cast_rate(args.casts, args.casts // 10)
        windowed = {w: cast_rate(args.casts, args.casts // 10, w) for w in args.windows}
        # The benchmark's fanout row: its bound is the cast rate times the cores.
        fanout_bound = min(FANOUT_SERVERS, os.cpu_count() or 1) * alone_casts
        fanout_casts = args.casts // FANOUT_SERVERS
        floor_fanout = {
            window: cast_rate(fanout_casts, fanout_casts // 10, window, FANOUT_SERVERS)
            for window in (None, *args.windows)
        }
        alone_calls = oslo_alone._rpc_rate("echo", args.calls)
        floor_calls = call_rate(args.calls, args.calls // 10)
        alone_p50, raw_p50 = latencies(counts)
        floor_p50 = call_p50(counts.latency_calls, counts.warmup)
        windows = "".join(
            f", window {w} {rate:,.0f} ({rate / alone_casts:.0%})" for w, rate in windowed.items()
        )
        fanouts = ", ".join(
            (f"window {w} " if w else "wire floor ") + f"{rate:,.0f} ({rate / fanout_bound:.0%})"
            for w, rate in floor_fanout.items()
        )
        print(
            f"round {number}: casts/s oslo alone {alone_casts:,.0f}, wire floor "
            f"{floor_casts:,.0f} ({floor_casts / alone_casts:.0%}){windows}; calls/s oslo alone "
            f"{alone_calls:,.0f}, wire floor {floor_calls:,.0f} ({floor_calls / alone_calls:.0%}); "
            f"call p50 oslo alone {alone_p50:.3f} ms, raw pyzmq {raw_p50:.3f} ms, target "
            f"{alone_p50 + 1.5 * raw_p50:.3f} ms, wire floor {floor_p50:.3f} ms; fanout "
            f"deliveries/s to {FANOUT_SERVERS} servers: oslo alone bound {fanout_bound:,.0f}, "
            f"{fanouts}",
            flush=True,
        )


if __name__ == "__main__":
    main()
