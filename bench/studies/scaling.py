"""How zmq:// scales with servers, client threads and payload size.

    python -m bench.studies.scaling [--quick] [--out DIR]

(a) 1, 3 and 10 RPC servers on one topic (the client's calls go round-robin
across them) x 1, 8 and 32 client threads sharing one transport and one
RPCClient: calls/s and the p50/p99 latency of those calls. (b) Payloads of
100 B to 1 MiB against one server: sequential call latency (1 thread) and
calls/s with 8 threads, and the same sequential round trips over raw pyzmq
(bench/raw_zmq.py) for comparison. The servers are bench/rpc_server.py
processes (threading executor), started per group on a topic of their own and
stopped by PID; the matchmaker is private to the run (bench/config.py, as for bench.run).
Every loop is bounded by a count and a time cap. ``--out DIR`` writes
``scaling.json`` and ``scaling.png`` (needs matplotlib: ``pip install -e .[bench]``).
See doc/benchmarks.md, Scaling.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import oslo_messaging
import zmq
from oslo_config import cfg

from bench import measure, raw_zmq, rpc_bench
from bench.config import loopback_config, parse_config
from bench.measure import percentile
from bench.procs import start_children, stop_all
from bench.report import load_average, machine_facts, markdown
from harness.net import LOOPBACK

URL = "zmq://"
GRID_PAYLOAD = 100  # bytes, the grid's payload
SIZES = (100, 1024, 10 * 1024, 100 * 1024, 1024 * 1024)


@dataclass(frozen=True)
class ScaleCounts:
    servers: tuple[int, ...]  # server counts of the grid, one topic each
    threads: tuple[int, ...]  # client thread counts of the grid
    sweep_threads: int  # client threads of the payload sweep's throughput loop
    warmup: int  # calls per thread before each timed loop
    calls: int  # calls of one timed loop, shared by its threads
    cap: float  # seconds of one timed loop
    start_cap: float  # for server processes to say READY


FULL = ScaleCounts((1, 3, 10), (1, 8, 32), 8, warmup=5, calls=20000, cap=4.0, start_cap=60.0)
QUICK = ScaleCounts((1, 3, 10), (1, 8, 32), 8, warmup=1, calls=40, cap=0.5, start_cap=60.0)


@dataclass
class Cell:
    """One timed loop: how many calls, how fast, how long each took (ms)."""

    calls: int
    per_s: float
    p50: float
    p99: float


@dataclass
class Results:
    counts: ScaleCounts
    grid: dict[str, Cell] = field(default_factory=dict)  # "<servers>x<threads>"
    sequential: dict[int, Cell] = field(default_factory=dict)  # payload size -> 1 thread
    threaded: dict[int, Cell] = field(default_factory=dict)  # payload size -> sweep_threads
    raw: dict[int, Cell] = field(default_factory=dict)  # payload size -> raw pyzmq
    notes: list[str] = field(default_factory=list)


def cell(samples: list[float], elapsed: float) -> Cell:
    """A Cell of call durations ``samples`` (seconds) made in ``elapsed`` seconds."""
    return Cell(
        len(samples),
        len(samples) / elapsed,
        percentile(samples, 50) * 1e3,
        percentile(samples, 99) * 1e3,
    )


# -- oslo.messaging loops ------------------------------------------------------------


def _echo(client, payload: str) -> None:
    reply = client.call({}, "echo", payload=payload)
    if reply != payload:
        raise AssertionError(f"echo returned {len(reply)} chars, sent {len(payload)}")


def _calls_while(client, payload: str, budget) -> list[float]:
    """One client thread's calls while the shared budget lasts: each call's duration."""
    samples: list[float] = []
    try:
        while budget.take():
            start = time.perf_counter()
            _echo(client, payload)
            samples.append(time.perf_counter() - start)
    except BaseException as exc:
        budget.errors.append(exc)  # the other threads stop at their next take()
        raise
    return samples


def timed_calls(client, payload: str, threads: int, counts: ScaleCounts) -> Cell:
    """``threads`` threads share ``client``, calling ``echo`` flat out for one loop.

    Every call is bounded by the RPC timeout and the loop by ``counts.cap``, so
    the threads end; the first error of any of them is raised here.
    """
    budget = rpc_bench.SharedBudget(counts.calls)
    with ThreadPoolExecutor(threads, thread_name_prefix="caller") as pool:
        # Warm-up calls from every thread, also starting all threads before the clock does.
        list(pool.map(lambda _: _echo(client, payload), range(threads * counts.warmup)))
        budget.start(counts.cap)
        start = time.perf_counter()
        futures = [pool.submit(_calls_while, client, payload, budget) for _ in range(threads)]
        samples = [sample for future in futures for sample in future.result()]
        elapsed = time.perf_counter() - start
    return cell(samples, elapsed)


@contextmanager
def rpc_servers(count: int, config_file: str, counts: ScaleCounts) -> Iterator[object]:
    """``count`` server processes on a fresh topic; yields an RPCClient of that topic."""
    topic = f"scale-{uuid.uuid4().hex[:8]}"
    specs = [
        (
            "bench.rpc_server",
            ["--config-file", config_file, "--url", URL, "--topic", topic, "--server", f"s{i}"],
            f"rpc server s{i}",
        )
        for i in range(count)
    ]
    servers = start_children(specs, counts.start_cap)
    transport = None
    try:
        transport = oslo_messaging.get_rpc_transport(cfg.CONF, url=URL)
        client = rpc_bench.rpc_client(transport, topic)  # no server: round-robin
        for _ in range(4 * count):  # every server connected and known before timing
            _echo(client, "x")
        yield client
    finally:
        if transport is not None:
            transport.cleanup()
        stop_all(servers)


def _timed(results: Results, table: dict, key, client, payload: str, threads: int) -> None:
    """One timed loop into ``table[key]``; a failing loop is noted (no value), not fatal."""
    try:
        table[key] = timed_calls(client, payload, threads, results.counts)
    except Exception as exc:
        what = f"{fmt_size(len(payload))}, {_plural(threads, 'thread')}"
        results.notes.append(f"{what} failed: {type(exc).__name__}: {exc}")


def measure_grid(config_file: str, results: Results) -> None:
    """(a) servers x client threads, then (b) the payload sweep on the 1-server group."""
    counts = results.counts
    for servers in counts.servers:
        _log(_plural(servers, "server") + " on one topic")
        with rpc_servers(servers, config_file, counts) as client:
            payload = "x" * GRID_PAYLOAD
            for threads in counts.threads:
                _timed(results, results.grid, f"{servers}x{threads}", client, payload, threads)
            if servers == 1:
                measure_payloads(client, results)


def measure_payloads(client, results: Results) -> None:
    for size in SIZES:
        _log(f"payload {fmt_size(size)}")
        _timed(results, results.sequential, size, client, "x" * size, 1)
        _timed(results, results.threaded, size, client, "x" * size, results.counts.sweep_threads)


# -- raw pyzmq -----------------------------------------------------------------------


def measure_raw(counts: ScaleCounts, results: Results) -> None:
    """The payload sweep's sequential round trips over a bare DEALER/ROUTER pair."""
    _log("raw pyzmq payload sweep")
    (server,) = start_children([("bench.raw_zmq", [], "raw pyzmq server")], counts.start_cap)
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVTIMEO, raw_zmq.RECV_TIMEOUT_MS)
    loop = replace(
        measure.QUICK, warmup=counts.warmup, latency_calls=counts.calls, latency_cap=counts.cap
    )
    try:
        dealer.connect(f"tcp://{LOOPBACK}:{int(server.ready_line.split()[1])}")
        for size in SIZES:
            noted = measure.Result()
            samples = raw_zmq.sequential(dealer, "x" * size, loop, noted, f"raw {size} B")
            results.raw[size] = cell(samples, sum(samples))
    finally:
        dealer.close()
        context.term()
        stop_all([server])


# -- output --------------------------------------------------------------------------


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


def fmt_size(size: int) -> str:
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= scale:
            return f"{size // scale} {unit}"
    return f"{size} B"


def _cells(value: Cell | None) -> list[str]:
    if value is None:
        return ["-", "-", "-"]
    return [f"{value.per_s:,.0f}/s", f"{value.p50:.3f} ms", f"{value.p99:.3f} ms"]


def grid_table(results: Results, counts: ScaleCounts) -> str:
    rows = []
    for servers in counts.servers:
        for threads in counts.threads:
            got = results.grid.get(f"{servers}x{threads}")
            label = f"{_plural(servers, 'server')}, {_plural(threads, 'thread')}"
            rows.append([label, str(got.calls) if got else "-", *_cells(got)])
    return markdown(["servers, client threads (100 B)", "calls", "calls/s", "p50", "p99"], rows)


def payload_table(results: Results, counts: ScaleCounts) -> str:
    rows = []
    for size in SIZES:
        seq, raw = results.sequential.get(size), results.raw.get(size)
        threaded = results.threaded.get(size)
        rate = f"{threaded.per_s:,.0f}/s" if threaded else "-"
        rows.append([fmt_size(size), *_cells(seq)[1:], rate, *_cells(raw)[1:]])
    header = [
        "payload (1 server)",
        "call p50",
        "call p99",
        f"calls/s, {counts.sweep_threads} threads",
        "raw p50",
        "raw p99",
    ]
    return markdown(header, rows)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message} ...", flush=True)


def save(results: Results, counts: ScaleCounts, out: str) -> None:
    """``scaling.json`` and (with matplotlib) ``scaling.png`` in ``out``."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "scaling.json"), "w") as handle:
        json.dump({"counts": asdict(counts), "results": asdict(results)}, handle, indent=2)
    try:
        from bench.studies import scaling_plot
    except ImportError as exc:
        print(f"no plot: {exc} (pip install -e .[bench])", flush=True)
        return
    scaling_plot.plot(results, counts, os.path.join(out, "scaling.png"), fmt_size)


def run(counts: ScaleCounts, workdir: str) -> Results:
    config_file = loopback_config(workdir)
    parse_config(config_file)
    results = Results(counts)
    measure_grid(config_file, results)
    try:
        measure_raw(counts, results)
    except Exception as exc:  # the oslo.messaging numbers still count
        results.notes.append(f"raw pyzmq failed: {type(exc).__name__}: {exc}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument("--out", metavar="DIR", help="write scaling.json and scaling.png here")
    args = parser.parse_args(argv)
    # SIGTERM ends the run like Ctrl-C does: the finally blocks stop every process started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    counts = QUICK if args.quick else FULL
    facts = machine_facts(["zmq"])
    print("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()), flush=True)
    load_before, started = load_average(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="zmqdriver-scaling-") as workdir:
        results = run(counts, workdir)
    elapsed = time.monotonic() - started
    print(f"\n{grid_table(results, counts)}\n\n{payload_table(results, counts)}\n")
    for note in results.notes:
        print(f"note: {note}")
    print(
        f"{'quick' if args.quick else 'full'} run: {elapsed:.0f} s; "
        f"1-minute load average {load_before} before, {load_average()} after",
        flush=True,
    )
    if args.out:
        save(results, counts, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
