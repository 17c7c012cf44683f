"""The plot of bench/studies/scaling.py: one PNG, three panels (matplotlib).

matplotlib is an extra (``pip install -e .[bench]``); the study runs without it. The figure
is drawn without pyplot, so no GUI backend is ever chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

if TYPE_CHECKING:
    from bench.studies.scaling import Cell, Results, ScaleCounts


def plot(
    results: Results, counts: ScaleCounts, path: str, size_label: Callable[[int], str]
) -> None:
    """Write the PNG to ``path``; ``size_label`` names a payload size on the x axes."""
    figure = Figure(figsize=(16, 4.8))
    grid, latency, rate = figure.subplots(1, 3)
    _grid_panel(grid, results, counts)
    _latency_panel(latency, results)
    _rate_panel(rate, results, counts)
    sizes = sorted(results.sequential)
    for axes in (latency, rate):
        axes.set_xticks(sizes, [size_label(size) for size in sizes])
        axes.xaxis.set_minor_locator(NullLocator())
    figure.suptitle("zmqdriver zmq:// scaling (2 cores shared by client and servers)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _series(table: dict[int, Cell], attribute: str) -> tuple[list[int], list[float]]:
    sizes = sorted(table)
    return sizes, [getattr(table[size], attribute) for size in sizes]


def _grid_panel(axes: Axes, results: Results, counts: ScaleCounts) -> None:
    for servers in counts.servers:
        cells = [(t, results.grid.get(f"{servers}x{t}")) for t in counts.threads]
        points = [(t, c.per_s) for t, c in cells if c is not None]
        axes.plot(*zip(*points), marker="o", label=f"{servers} server{'s' * (servers > 1)}")
    axes.set_xscale("log")
    axes.set_xticks(list(counts.threads), [str(t) for t in counts.threads])
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_ylim(bottom=0)
    axes.set_xlabel("client threads (one transport)")
    axes.set_ylabel("calls/s")
    axes.set_title("RPC throughput, 100 B payload")
    axes.grid(True, alpha=0.3)
    axes.legend()


def _payload_axes(axes: Axes, ylabel: str, title: str) -> None:
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_locator(NullLocator())
    axes.set_xlabel("payload")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()


def _latency_panel(axes: Axes, results: Results) -> None:
    transports = (("zmq://", results.sequential, "C0"), ("raw pyzmq", results.raw, "C2"))
    for name, table, color in transports:
        for pct, style in (("p50", "-o"), ("p99", "--^")):
            axes.plot(*_series(table, pct), style, color=color, label=f"{name} {pct}")
    _payload_axes(axes, "ms per call", "Sequential call latency, 1 server")


def _rate_panel(axes: Axes, results: Results, counts: ScaleCounts) -> None:
    threads = counts.sweep_threads
    axes.plot(
        *_series(results.threaded, "per_s"), "-o", color="C0", label=f"zmq://, {threads} threads"
    )
    axes.plot(*_series(results.sequential, "per_s"), "--s", color="C0", label="zmq://, 1 thread")
    axes.plot(*_series(results.raw, "per_s"), "--^", color="C2", label="raw pyzmq, 1 thread")
    _payload_axes(axes, "calls/s", "Throughput vs payload, 1 server")
