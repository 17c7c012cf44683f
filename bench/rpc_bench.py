"""Measurements through oslo.messaging's public API, for any transport URL.

The client side runs in this process on ``cfg.CONF`` (parsed once by the
caller); the RPC servers (bench/rpc_server.py) run in their own processes
with the threading (or eventlet) executor, on topics unique to this run, and so does the
notification listener of bench/notify_bench.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Collection

import oslo_messaging
from oslo_config import cfg

from bench import notify_bench
from bench.measure import LARGE, SMALL, Counts, Deadline, Result, latency_values
from bench.procs import child_spec, delete_rabbit_queues, start_children, stop_all

CALL_TIMEOUT = 30  # seconds, for every RPC call of the benchmark


def run_column(
    url: str,
    config_file: str,
    counts: Counts,
    notifications: bool = True,
    executor: str = "threading",
    rows: Collection[str] | None = None,
) -> Result:
    """All oslo.messaging rows for ``url``: servers started, measured, stopped.

    ``config_file`` is the servers' (and listener's) config file; the client side uses
    ``cfg.CONF`` as the caller parsed it. Without ``notifications`` the listener is not
    started and the notification row is left out (no value). ``executor`` is the servers'
    and the listener's (``eventlet``: monkey-patched processes). ``rows``: the names of the
    steps to measure (``"cast throughput"``, ``"fanout"``, ...), by default all.
    """
    run = uuid.uuid4().hex[:8]
    topic, fanout_topic = f"bench-{run}", f"bench-{run}-fanout"
    fanout_names = [f"fan{i}" for i in range(counts.fanout_servers)]

    def spec(topic: str, server: str) -> tuple[str, list[str], str]:
        args = ["--config-file", config_file, "--url", url, "--executor", executor]
        args += ["--topic", topic, "--server", server]
        return child_spec("bench.rpc_server", args, f"rpc server {server}", executor)

    specs = [spec(topic, "single")] + [spec(fanout_topic, name) for name in fanout_names]
    listener_spec, notify_topic = notify_bench.listener_spec(url, config_file, counts, executor)
    if notifications:
        specs.append(listener_spec)
    servers = start_children(specs, counts.start_cap)
    listener = servers[-1]
    result = Result()
    transport = None
    try:
        transport = oslo_messaging.get_rpc_transport(cfg.CONF, url=url)
        steps = [
            ("latency", lambda: _latency(transport, topic, counts, result)),
            ("call throughput", lambda: _call_throughput(transport, topic, counts, result)),
            ("cast throughput", lambda: _cast_throughput(transport, topic, counts, result)),
            ("fanout", lambda: _fanout(transport, fanout_topic, fanout_names, counts, result)),
        ]
        if notifications:
            steps.append(
                (
                    "notifications",
                    lambda: notify_bench.measure(url, listener, notify_topic, counts, result),
                )
            )
        for name, step in steps:
            if rows is not None and name not in rows:
                continue
            try:
                step()
            except Exception as exc:  # a failing row is reported, not fatal
                result.notes.append(f"{name} failed: {type(exc).__name__}: {exc}")
    finally:
        if transport is not None:
            transport.cleanup()
        stop_all(servers)
        if url.startswith("rabbit"):
            queues = [topic, f"{topic}.single", fanout_topic, f"{notify_topic}.info"]
            delete_rabbit_queues(url, queues + [f"{fanout_topic}.{n}" for n in fanout_names])
    return result


def rpc_client(transport, topic: str, server: str | None = None, fanout: bool = False):
    target = oslo_messaging.Target(topic=topic, server=server, fanout=fanout)
    return oslo_messaging.get_rpc_client(transport, target, timeout=CALL_TIMEOUT)


def _latency(transport, topic: str, counts: Counts, result: Result) -> None:
    """Sequential calls, one at a time: p50/p99 at each payload size."""
    client = rpc_client(transport, topic, server="single")
    for prefix, size in (("lat_small", SMALL), ("lat_large", LARGE)):
        payload = "x" * size
        for _ in range(counts.warmup):
            client.call({}, "echo", payload=payload)
        samples: list[float] = []
        deadline = Deadline(counts.latency_cap)
        for _ in range(counts.latency_calls):
            start = time.perf_counter()
            reply = client.call({}, "echo", payload=payload)
            samples.append(time.perf_counter() - start)
            if reply != payload:
                raise AssertionError(f"echo returned {len(reply)} chars, sent {size}")
            if deadline.expired:
                result.notes.append(f"{prefix}: time cap hit after {len(samples)} calls")
                break
        result.values.update(latency_values(prefix, samples))


class SharedBudget:
    """Calls left for the caller threads to make; closed by the time cap or by an error."""

    def __init__(self, calls: int) -> None:
        self._lock = threading.Lock()
        self._left = calls
        self._deadline: Deadline | None = None
        self.done = 0
        self.errors: list[BaseException] = []

    def start(self, cap: float) -> None:
        self._deadline = Deadline(cap)

    def take(self) -> bool:
        """Whether the calling thread may make one more call."""
        with self._lock:
            if self._left <= 0 or self.errors or (self._deadline and self._deadline.expired):
                return False
            self._left -= 1
            return True

    def count(self) -> None:
        with self._lock:
            self.done += 1


def _call_throughput(transport, topic: str, counts: Counts, result: Result) -> None:
    """``counts.threads`` threads share one transport and one client, calling flat out."""
    client = rpc_client(transport, topic, server="single")
    payload = "x" * SMALL
    budget = SharedBudget(counts.throughput_calls)
    ready = threading.Barrier(counts.threads + 1)

    def caller() -> None:
        try:
            for _ in range(max(1, counts.warmup // counts.threads)):
                client.call({}, "echo", payload=payload)
        except BaseException as exc:  # reported by the main thread
            budget.errors.append(exc)
        ready.wait()
        try:
            while budget.take():
                client.call({}, "echo", payload=payload)
                budget.count()
        except BaseException as exc:
            budget.errors.append(exc)

    threads = [
        threading.Thread(target=caller, name=f"caller-{i}", daemon=True)
        for i in range(counts.threads)
    ]
    for thread in threads:
        thread.start()
    ready.wait()  # every thread has warmed up
    budget.start(counts.throughput_cap)
    start = time.perf_counter()
    join_deadline = Deadline(counts.throughput_cap + CALL_TIMEOUT + 5)
    for thread in threads:
        thread.join(join_deadline.remaining)
    elapsed = time.perf_counter() - start
    if budget.errors:
        raise budget.errors[0]
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError("caller threads still running after their time cap")
    if budget.done < counts.throughput_calls:
        result.notes.append(f"call_tput: time cap hit after {budget.done} calls")
    result.values["call_tput"] = budget.done / elapsed


def _cast_throughput(transport, topic: str, counts: Counts, result: Result) -> None:
    """Casts from one thread to the one server of ``topic``, until it has them all."""
    client = rpc_client(transport, topic)
    probes = {"single": rpc_client(transport, topic, server="single")}
    _warm_casts(client, list(probes.values()), counts.warmup, counts.drain_cap)
    rate = _cast_rate(client, probes, counts.casts, counts.cast_cap, counts.drain_cap, result)
    if rate:
        result.values["cast_tput"] = rate


def _fanout(transport, topic: str, names: list[str], counts: Counts, result: Result) -> None:
    """Fanout casts to every server of ``topic``, until all of them have all the casts."""
    client = rpc_client(transport, topic, fanout=True)
    probes = {name: rpc_client(transport, topic, server=name) for name in names}
    _warm_casts(client, list(probes.values()), max(1, counts.warmup // 10), counts.drain_cap)
    rate = _cast_rate(
        client, probes, counts.fanout_casts, counts.fanout_cap, counts.drain_cap, result
    )
    if rate:
        result.values["fanout_tput"] = rate


def _cast_rate(
    client, probes: dict, count: int, cap: float, drain_cap: float, result: Result
) -> float | None:
    """Deliveries per second of up to ``count`` casts sent back to back from this thread.

    The clock starts before the first cast and stops when the last server
    received its last copy; casts a server has not received within
    ``drain_cap`` after sending ends are reported as lost.
    """
    payload = "x" * SMALL
    tag = f"casts-{uuid.uuid4().hex[:8]}"
    sent = 0
    deadline = Deadline(cap)
    start = time.monotonic()
    while sent < count and not deadline.expired:
        client.cast({}, "sink", tag=tag, payload=payload)
        sent += 1
    if sent < count:
        result.notes.append(f"casts: time cap hit after {sent} of {count}")
    received, last = _wait_received(list(probes.values()), tag, sent, drain_cap)
    short = {name: got for name, got in zip(probes, received, strict=True) if got < sent}
    if short:
        result.notes.append(
            f"LOST CASTS: of {sent} sent, servers received only {short} within {drain_cap:.0f} s"
        )
    return sum(received) / (last - start) if sum(received) else None


def _warm_casts(client, probes: list, count: int, cap: float) -> None:
    """Casts to warm connections and caches, waiting until every probed server has them."""
    tag = f"warm-{uuid.uuid4().hex[:8]}"
    for _ in range(count):
        client.cast({}, "sink", tag=tag, payload="x" * SMALL)
    received, _ = _wait_received(probes, tag, count, cap)
    if min(received) < count:
        raise RuntimeError(f"warm-up casts not all received: {received} of {count} each")


def _wait_received(probes: list, tag: str, expected: int, cap: float) -> tuple[list[int], float]:
    """Ask each server (a directed call) until it has ``expected`` casts of ``tag`` or ``cap``.

    Returns the count per server and the latest arrival time among them
    (time.monotonic() in the server's process: the same clock as ours).
    """
    deadline = Deadline(cap)
    while True:
        answers = [probe.call({}, "received", tag=tag) for probe in probes]
        counts = [int(count) for count, _ in answers]
        if min(counts) >= expected or deadline.expired:
            return counts, max(last for _, last in answers)
        time.sleep(0.02)
