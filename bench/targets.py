"""The performance issue's targets, judged on the numbers of one run.

    python -m bench.targets RUN.json [RUN.json ...]   # runs saved by bench.run --json

Each target compares zmq:// with what the same run measured beside it: the
`oslo alone` ceiling, raw pyzmq, zmq:// without CURVE or on threads. bench.run
prints the verdicts under its table; given several saved runs, this prints
each run's and how many runs held each target, since one run's ratios move
with the machine and with `oslo alone`'s own draw (doc/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from bench.report import markdown

# column -> metric key -> value, as bench.run's results hold them
Values = Mapping[str, Mapping[str, float]]

# (row, column, metric key, least share of oslo alone's value)
SHARES = [
    ("calls/s, 8 threads", "zmq", "call_tput", 0.5),
    ("casts/s", "zmq", "cast_tput", 0.7),
    ("fanout deliveries/s", "zmq", "fanout_tput", 0.6),
    ("notifications/s, zmq://", "zmq", "notify_tput", 0.5),
    ("notifications/s, zmq+redis://", "zmq+redis", "notify_tput", 0.5),
]
P50_RAW_FACTOR = 1.5  # call p50 at most oslo alone's plus this many raw pyzmq p50s
# (row, column, most its time per operation may be, as a multiple of zmq://'s, on any row)
COSTS = [("CURVE cost", "zmq-curve", 1.3), ("eventlet cost", "zmq-eventlet", 1.5)]


@dataclass(frozen=True)
class Verdict:
    row: str
    target: str
    measured: str
    held: bool


def lower_is_better(key: str) -> bool:
    """Whether a metric is a time (latency rows, ``lat_*``, in ms) rather than a rate.

    >>> lower_is_better("lat_small_p50"), lower_is_better("cast_tput")
    (True, False)
    """
    return key.startswith("lat_")


def time_ratio(value: float | None, base: float | None, lower_is_better: bool) -> float | None:
    """``value``'s time per operation as a multiple of ``base``'s (None without both).

    >>> time_ratio(0.6, 0.5, lower_is_better=True)  # latencies: 0.6 ms against 0.5 ms
    1.2
    >>> time_ratio(4000, 5000, lower_is_better=False)  # rates: 4,000/s against 5,000/s
    1.25
    """
    if not value or not base:
        return None
    return value / base if lower_is_better else base / value


def verdicts(values: Values) -> list[Verdict]:
    """The targets this run's columns can judge, in the issue's order.

    >>> run = {
    ...     "zmq": {"lat_small_p50": 0.4, "cast_tput": 6000, "notify_tput": 4000},
    ...     "raw": {"lat_small_p50": 0.2},
    ...     "oslo": {"lat_small_p50": 0.15, "cast_tput": 8000, "notify_tput": 9000},
    ... }
    >>> for v in verdicts(run):
    ...     print(v.row, "|", v.measured, "|", v.held)
    call p50, 100 B | 0.400 ms against 0.450 ms | True
    casts/s | 75.0 % (6,000 / 8,000/s) | True
    notifications/s, zmq:// | 44.4 % (4,000 / 9,000/s) | False
    """
    found = [_p50(values)]
    found += [_share(values, *share) for share in SHARES]
    found += [_cost(values, *cost) for cost in COSTS]
    return [verdict for verdict in found if verdict is not None]


def _value(values: Values, column: str, key: str) -> float | None:
    return values.get(column, {}).get(key)


def _p50(values: Values) -> Verdict | None:
    zmq, oslo, raw = (_value(values, c, "lat_small_p50") for c in ("zmq", "oslo", "raw"))
    if not (zmq and oslo and raw):
        return None
    limit = oslo + P50_RAW_FACTOR * raw
    return Verdict(
        "call p50, 100 B",
        f"≤ oslo alone + {P50_RAW_FACTOR} x raw pyzmq",
        f"{zmq:.3f} ms against {limit:.3f} ms",
        zmq <= limit,
    )


def _share(values: Values, row: str, column: str, key: str, least: float) -> Verdict | None:
    value, ceiling = _value(values, column, key), _value(values, "oslo", key)
    if not (value and ceiling):
        return None
    share = value / ceiling
    measured = f"{share * 100:.1f} % ({value:,.0f} / {ceiling:,.0f}/s)"
    return Verdict(row, f"≥ {least * 100:.0f} % of oslo alone", measured, share >= least)


def _cost(values: Values, row: str, column: str, most: float) -> Verdict | None:
    if column not in values or "zmq" not in values:
        return None
    ratios = [
        ratio
        for key, value in values[column].items()
        if (ratio := time_ratio(value, _value(values, "zmq", key), lower_is_better(key)))
    ]
    if not ratios:
        return None
    worst = max(ratios)
    measured = f"{min(ratios):.2f}-{worst:.2f}x over {len(ratios)} rows"
    return Verdict(row, f"≤ {most}x zmq:// on every row", measured, worst <= most)


def table(found: list[Verdict]) -> str:
    """The verdicts of one run as an aligned Markdown table."""
    rows = [[v.row, v.target, v.measured, "yes" if v.held else "no"] for v in found]
    return markdown(["target of issue 16", "target", "measured", "holds"], rows)


def tally(runs: list[list[Verdict]]) -> str:
    """How many of ``runs`` held each target, as an aligned Markdown table.

    >>> held, missed = Verdict("casts/s", "t", "m", True), Verdict("casts/s", "t", "m", False)
    >>> print(tally([[held], [missed], [held]]))
    | target of issue 16 | held in |
    |--------------------|--------:|
    | casts/s            |  2 of 3 |
    """
    rows: dict[str, list[bool]] = {}
    for found in runs:
        for verdict in found:
            rows.setdefault(verdict.row, []).append(verdict.held)
    lines = [[row, f"{sum(held)} of {len(held)}"] for row, held in rows.items()]
    return markdown(["target of issue 16", "held in"], lines)


def run_values(saved: Mapping) -> dict[str, dict[str, float]]:
    """The values of a run saved by ``bench.run --json``, by column."""
    return {
        column: result["values"]
        for column, result in saved["results"].items()
        if not result.get("unavailable")
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN.json", help="saved by bench.run --json")
    args = parser.parse_args(argv)
    judged = []
    for path in args.runs:
        with open(path) as handle:
            saved = json.load(handle)
        found = verdicts(run_values(saved))
        judged.append(found)
        print(f"{path} ({saved['machine'].get('zmqdriver', '?')}):\n{table(found)}\n")
    print(tally(judged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
