"""What one benchmark run measures and how much: counts, time caps, results.

Every loop of the benchmark is bounded twice: by a count from ``Counts`` and
by a time cap in seconds. A result records what was actually done, so a
capped loop still yields an honest rate.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

SMALL = 100  # bytes of payload
LARGE = 10 * 1024


@dataclass(frozen=True)
class Counts:
    warmup: int  # calls (or casts) before each timed loop
    latency_calls: int  # sequential calls per payload size
    latency_cap: float
    threads: int  # client threads of the call-throughput row
    throughput_calls: int  # calls shared by those threads
    throughput_cap: float
    casts: int
    cast_cap: float
    fanout_servers: int
    fanout_casts: int  # each delivered to every server
    fanout_cap: float
    notifications: int  # sent from one thread, received by one listener
    notify_cap: float
    drain_cap: float  # wait for servers to receive what was sent
    raw_pipelined: int  # raw pyzmq round trips, ``raw_window`` in flight
    raw_window: int
    raw_cap: float
    start_cap: float  # for server processes to say READY


FULL = Counts(
    warmup=200,
    latency_calls=2000,
    latency_cap=20.0,
    threads=8,
    throughput_calls=15000,
    throughput_cap=25.0,
    casts=10000,
    cast_cap=15.0,
    fanout_servers=3,
    fanout_casts=4000,
    fanout_cap=15.0,
    notifications=2000,
    notify_cap=15.0,
    drain_cap=30.0,
    raw_pipelined=50000,
    raw_window=64,
    raw_cap=10.0,
    start_cap=60.0,
)

QUICK = Counts(
    warmup=10,
    latency_calls=50,
    latency_cap=2.0,
    threads=8,
    throughput_calls=200,
    throughput_cap=2.0,
    casts=100,
    cast_cap=2.0,
    fanout_servers=3,
    fanout_casts=50,
    fanout_cap=2.0,
    notifications=100,
    notify_cap=2.0,
    drain_cap=5.0,
    raw_pipelined=2000,
    raw_window=64,
    raw_cap=2.0,
    start_cap=60.0,
)


@dataclass
class Result:
    """Metrics of one column (metric key -> value) and notes on anything unusual."""

    values: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unavailable: str | None = None  # why the whole column has no numbers


def percentile(samples: list[float], pct: float) -> float:
    """The ``pct`` percentile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def latency_values(prefix: str, samples: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds of ``samples`` (seconds), keyed ``<prefix>_p50`` etc."""
    return {
        f"{prefix}_p50": percentile(samples, 50) * 1000.0,
        f"{prefix}_p99": percentile(samples, 99) * 1000.0,
    }


class Deadline:
    """A time cap: ``expired`` once ``seconds`` have passed since creation."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at

    @property
    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())
