#!/usr/bin/env python3
"""Benchmark zmqdriver against RabbitMQ and raw pyzmq, side by side, in one run.

    python -m bench.run [--quick] [--json FILE]
        [--only zmq,zmq-curve,zmq-eventlet,zmq+redis,rabbit,raw,oslo]

Columns: zmq:// (embedded matchmaker), zmq:// + CURVE (the same with CURVE
encryption and authentication, key pairs made for the run; its "CURVE cost"
column compares it with zmq://), zmq:// eventlet (servers and listener on the
eventlet executor; "eventlet cost" compares it with zmq://), zmq+redis:// (a private redis-server
started here), rabbit:// (the local RabbitMQ, started if it is down; the
column is "unavailable" if it cannot be reached), raw pyzmq (the floor of the
wire) and oslo alone (oslo.messaging with an in-process driver and no
transport: the best any driver could score on this machine; its "best vs
rabbit" column is that ceiling against rabbit://, see bench/oslo_alone.py).
Under the table it judges the performance issue's targets on this run's
numbers (bench/targets.py). All traffic stays on loopback; every process
started here is stopped by PID. See doc/benchmarks.md.
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
from dataclasses import asdict, dataclass

from bench import oslo_alone, raw_zmq, rpc_bench, targets
from bench.config import loopback_config, parse_config
from bench.measure import FULL, QUICK, Counts, Result
from bench.procs import ProcessError, RabbitMQ
from bench.report import load_average, machine_facts, markdown
from harness.redis_server import RedisServer, RedisServerError
from zmqdriver import keys

DEFAULT_RABBIT_URL = "rabbit://guest:guest@127.0.0.1:5672/"
COLUMNS = {
    "zmq": "zmq://",
    "zmq-curve": "zmq:// + CURVE",
    "zmq-eventlet": "zmq:// eventlet",
    "zmq+redis": "zmq+redis://",
    "rabbit": "rabbit://",
    "raw": "raw pyzmq",
    "oslo": "oslo alone",
}


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str  # "ms" (lower is better) or "/s" (higher is better)

    @property
    def lower_is_better(self) -> bool:
        return targets.lower_is_better(self.key)


def metrics(counts: Counts) -> list[Metric]:
    return [
        Metric("lat_small_p50", "call latency p50, 100 B", "ms"),
        Metric("lat_small_p99", "call latency p99, 100 B", "ms"),
        Metric("lat_large_p50", "call latency p50, 10 KiB", "ms"),
        Metric("lat_large_p99", "call latency p99, 10 KiB", "ms"),
        Metric("call_tput", f"calls/s, {counts.threads} threads, 1 transport (raw: †)", "/s"),
        Metric("cast_tput", "casts/s until the server has all, 1 thread", "/s"),
        Metric("fanout_tput", f"fanout deliveries/s, {counts.fanout_servers} servers", "/s"),
        Metric("notify_tput", "notifications/s until the listener has all", "/s"),
    ]


# -- running the columns -----------------------------------------------------------


def write_curve_configs(directory: str) -> tuple[str, str]:
    """The config files (client, servers) of the zmq:// + CURVE column, with fresh key pairs.

    The client (this process) and the server processes have a key pair each; the servers'
    allowed directory holds the client's public key only.
    """
    key_dir = os.path.join(directory, "curve-keys")
    allowed_dir = os.path.join(directory, "curve-allowed")
    os.makedirs(key_dir, mode=0o700)
    os.makedirs(allowed_dir, mode=0o700)
    client_public, client_secret = keys.create(key_dir, "bench-client")
    _, server_secret = keys.create(key_dir, "bench-server")
    keys.allow(client_public, allowed_dir)
    client = loopback_config(
        directory,
        "bench-curve-client.conf",
        zmq_curve_enabled="true",
        zmq_curve_secret_key_file=client_secret,
    )
    server = loopback_config(
        directory,
        "bench-curve-server.conf",
        zmq_curve_enabled="true",
        zmq_curve_secret_key_file=server_secret,
        zmq_curve_allowed_keys_dir=allowed_dir,
    )
    return client, server


def run_columns(
    selected: list[str], counts: Counts, rabbit_url: str, workdir: str
) -> dict[str, Result]:
    config_file = loopback_config(workdir)
    parse_config(config_file)
    results: dict[str, Result] = {}
    redis: RedisServer | None = None
    rabbit = RabbitMQ(rabbit_url)
    try:
        for column in selected:
            print(f"[{time.strftime('%H:%M:%S')}] measuring {COLUMNS[column]} ...", flush=True)
            try:
                if column == "zmq":
                    results[column] = rpc_bench.run_column("zmq://", config_file, counts)
                elif column == "zmq-curve":
                    # Notifications go through the store, not ZeroMQ: no notification row.
                    client_config, server_config = write_curve_configs(workdir)
                    parse_config(client_config)
                    try:
                        results[column] = rpc_bench.run_column(
                            "zmq://", server_config, counts, notifications=False
                        )
                    finally:
                        parse_config(config_file)
                elif column == "zmq-eventlet":
                    results[column] = rpc_bench.run_column(
                        "zmq://", config_file, counts, executor="eventlet"
                    )
                elif column == "zmq+redis":
                    redis = RedisServer(tempfile.mkdtemp(prefix="redis-", dir=workdir))
                    redis.start()
                    results[column] = rpc_bench.run_column(redis.url, config_file, counts)
                elif column == "rabbit":
                    why = rabbit.ensure()
                    if why:
                        results[column] = Result(unavailable=why)
                    else:
                        results[column] = rpc_bench.run_column(rabbit_url, config_file, counts)
                elif column == "oslo":
                    results[column] = oslo_alone.run(counts)
                else:
                    results[column] = raw_zmq.run(counts)
            except (ProcessError, RedisServerError) as exc:
                results[column] = Result(unavailable=str(exc))
            for note in results[column].notes:
                print(f"    note: {note}", flush=True)
    finally:
        if redis is not None:
            redis.stop()
        rabbit.stop_if_started()
    return results


# -- the table ---------------------------------------------------------------------


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"
    return f"{value:,.0f}/s"


def vs_rabbit(zmq: float | None, rabbit: float | None, metric: Metric) -> str:
    """How much better (or worse) zmq:// is than rabbit:// on this row."""
    if not zmq or not rabbit:
        return "-"
    factor = rabbit / zmq if metric.lower_is_better else zmq / rabbit
    return f"{factor:.1f}x better" if factor >= 1 else f"{1 / factor:.1f}x worse"


def vs_raw(zmq: float | None, raw: float | None, metric: Metric) -> str:
    """zmq://'s time per operation as a multiple of the raw pyzmq floor's."""
    factor = targets.time_ratio(zmq, raw, metric.lower_is_better)
    return "-" if factor is None else f"{factor:.1f}x raw"


def cost(variant: float | None, plain: float | None, metric: Metric) -> str:
    """A variant of zmq:// (CURVE, eventlet)'s time per operation as a multiple of zmq://'s."""
    factor = targets.time_ratio(variant, plain, metric.lower_is_better)
    return "-" if factor is None else f"{factor:.2f}x"


def table(results: dict[str, Result], counts: Counts) -> str:
    """A Markdown table (aligned, so it reads as plain text too) and its footnotes."""

    def value(column: str, key: str) -> float | None:
        result = results.get(column)
        return result.values.get(key) if result else None

    columns = [c for c in COLUMNS if c in results]  # the ones --only selected
    header = ["metric"] + [COLUMNS[c] for c in columns] + ["zmq vs rabbit", "zmq vs raw"]
    with_oslo = "oslo" in results
    if with_oslo:
        header.append("best vs rabbit")
    with_curve = "zmq-curve" in results
    if with_curve:
        header.append("CURVE cost")
    with_eventlet = "zmq-eventlet" in results
    if with_eventlet:
        header.append("eventlet cost")
    rows = []
    for metric in metrics(counts):
        cells = [metric.label]
        for column in columns:
            result = results[column]
            if result.unavailable:
                cells.append("unavailable")
            else:
                cells.append(fmt_value(value(column, metric.key), metric.unit))
        zmq = value("zmq", metric.key)
        cells.append(vs_rabbit(zmq, value("rabbit", metric.key), metric))
        cells.append(vs_raw(zmq, value("raw", metric.key), metric))
        if with_oslo:
            cells.append(vs_rabbit(value("oslo", metric.key), value("rabbit", metric.key), metric))
        if with_curve:
            cells.append(cost(value("zmq-curve", metric.key), zmq, metric))
        if with_eventlet:
            cells.append(cost(value("zmq-eventlet", metric.key), zmq, metric))
        rows.append(cells)

    lines = [markdown(header, rows), ""]
    lines.append(
        f"† raw pyzmq: pipelined round trips/s, one thread, {counts.raw_window} in flight."
    )
    lines.append(
        "zmq vs raw: zmq://'s time per operation as a multiple of raw pyzmq's (1.0x = the floor)."
    )
    if with_oslo:
        lines.append(
            "best vs rabbit: oslo alone against rabbit://, the ceiling of any driver's "
            '"zmq vs rabbit". oslo alone has no transport; its throughput rows are one '
            "server process's dispatch rate (fanout: that rate times the cores the servers "
            "can use at most; see bench/oslo_alone.py)."
        )
    if with_curve:
        lines.append(
            "CURVE cost: zmq:// + CURVE's time per operation as a multiple of zmq://'s "
            "(notifications do not use ZeroMQ)."
        )
    if with_eventlet:
        lines.append(
            "eventlet cost: zmq:// with the servers and the listener on the eventlet executor "
            "(monkey-patched processes), time per operation as a multiple of zmq://'s."
        )
    for column, result in results.items():
        if result.unavailable:
            lines.append(f"{COLUMNS[column]} unavailable: {result.unavailable}")
        for note in result.notes:
            lines.append(f"{COLUMNS[column]}: {note}")
    return "\n".join(lines)


# -- command line --------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    parser.add_argument(
        "--only",
        default=",".join(COLUMNS),
        help=f"comma-separated columns to measure (default: {','.join(COLUMNS)})",
    )
    parser.add_argument("--json", metavar="FILE", help="also save the raw results as JSON")
    parser.add_argument(
        "--rabbit-url", default=DEFAULT_RABBIT_URL, help=f"default: {DEFAULT_RABBIT_URL}"
    )
    args = parser.parse_args(argv)
    args.selected = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in args.selected if c not in COLUMNS]
    if unknown or not args.selected:
        parser.error(f"--only: unknown column(s) {unknown}; choose from {','.join(COLUMNS)}")
    args.selected = [c for c in COLUMNS if c in args.selected]  # the table's order
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM ends the run like Ctrl-C does: the finally blocks stop every process started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    counts = QUICK if args.quick else FULL
    facts = machine_facts(args.selected)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()), flush=True)
    load_before = load_average()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="zmqdriver-bench-") as workdir:
        results = run_columns(args.selected, counts, args.rabbit_url, workdir)
    elapsed = time.monotonic() - started
    load_after = load_average()
    print()
    print(table(results, counts))
    values = {c: r.values for c, r in results.items() if not r.unavailable}
    verdicts = targets.verdicts(values)
    if verdicts:
        print(f"\n{targets.table(verdicts)}")
    print(
        f"\n{'quick' if args.quick else 'full'} run: {elapsed:.0f} s; "
        f"1-minute load average {load_before} before, {load_after} after",
        flush=True,
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "machine": facts,
                    "quick": args.quick,
                    "counts": asdict(counts),
                    "elapsed_s": elapsed,
                    "load_average": [load_before, load_after],
                    "results": {column: asdict(result) for column, result in results.items()},
                    "targets": [asdict(verdict) for verdict in verdicts],
                },
                handle,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
