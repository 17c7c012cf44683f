"""Each cost of a scale run against the number of hosts, from saved runs (matplotlib PNG).

    python -m bench.scale.plot doc/scale/*.json -o doc/scale/costs.png

One panel per cost, one line per transport and executor pool size (runs with a ``--fault``
are left out: their costs include the fault). Several runs at one N are all drawn as points;
the line goes through their median (one run on a machine busy with other work should not move
it). Timing panels have a logarithmic y axis. Needs the ``bench`` extra (matplotlib).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

# (value key, panel title); the keys are report.summarize's.
TIMINGS = {"fanout_last_p50", "fanout_last_max", "call_p99"}
PANELS = [
    ("api_fds", "API: file descriptors"),
    ("api_tcp", "API: TCP connections"),
    ("ctl_fds", "controller: file descriptors"),
    ("ctl_tcp", "controller: TCP connections"),
    ("api_rss", "API: RSS (MiB)"),
    ("ctl_rss", "controller: RSS (MiB)"),
    ("api_cpu", "API: CPU (% of a core)"),
    ("ctl_cpu", "controller: CPU (% of a core)"),
    ("redis_ops", "Redis commands/s"),
    ("fanout_last_p50", "fanout to the last host, p50 (s)"),
    ("fanout_last_max", "fanout to the last host, max (s)"),
    ("call_p99", "directed call p99 (ms)"),
]
DEFAULT_POOL = 64  # oslo's executor_thread_pool_size


def points(paths: list[str]) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """series label -> value key -> [(hosts, value)] of every run without a fault."""
    found: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for path in paths:
        for run in json.loads(Path(path).read_text())["runs"]:
            args = run.get("args", {})
            if args.get("fault"):
                continue
            label = series_label(run["url"], args.get("executor_threads") or DEFAULT_POOL)
            hosts = hosts_of(run["values"]["hosts"])
            for key, _ in PANELS:
                value = run["values"].get(key)
                if value is not None:
                    found[label][key].append((hosts, float(value)))
    return found


def series_label(url: str, threads: int) -> str:
    """
    >>> series_label("zmq+redis://", 8)
    'zmq+redis, 8 executor threads'
    """
    return f"{url.split(':')[0]}, {threads} executor threads"


def hosts_of(cell: str) -> int:
    """
    >>> hosts_of("300 (6 x 50)")
    300
    """
    match = re.match(r"\d+", str(cell))
    if match is None:
        raise ValueError(f"not a host count: {cell!r}")
    return int(match.group())


def draw(found: dict[str, dict[str, list[tuple[int, float]]]], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    columns = 4
    rows = -(-len(PANELS) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows))
    # One colour per series in every panel, whichever series a panel lacks.
    colours = {label: f"C{k}" for k, label in enumerate(sorted(found))}
    for axis, (key, title) in zip(axes.flat, PANELS):
        for label, colour in colours.items():
            samples = found[label].get(key, [])
            if not samples:
                continue
            axis.plot(*_medians(samples), marker="o", color=colour)
            axis.scatter(*zip(*samples), color=colour, s=10, alpha=0.5)
        axis.set_title(title, fontsize=10)
        if key in TIMINGS:
            axis.set_yscale("log")
        axis.set_xlabel("hosts")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(PANELS) :]:
        axis.axis("off")
    handles = [plt.Line2D([], [], color=c, marker="o") for c in colours.values()]
    figure.legend(handles, list(colours), loc="lower center", ncol=len(colours))
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    figure.savefig(out, dpi=90)


def _medians(samples: list[tuple[int, float]]) -> tuple[list[int], list[float]]:
    """
    >>> _medians([(300, 9.0), (100, 1.0), (300, 0.2), (300, 0.4)])
    ([100, 300], [1.0, 0.4])
    """
    by_hosts: dict[int, list[float]] = defaultdict(list)
    for hosts, value in samples:
        by_hosts[hosts].append(value)
    xs = sorted(by_hosts)
    return xs, [statistics.median(by_hosts[x]) for x in xs]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.plot", description=__doc__)
    parser.add_argument("runs", nargs="+", metavar="JSON", help="saved runs (--json)")
    parser.add_argument("-o", "--output", default="costs.png")
    args = parser.parse_args(argv)
    draw(points(args.runs), args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
