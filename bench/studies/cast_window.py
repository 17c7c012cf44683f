"""What ``zmq_cast_window`` buys and costs: casts and fanout at several windows.

    python -m bench.studies.cast_window [--windows 1,16,64,256] [--rounds N] [--quick]

The window bounds the casts on their way to one server without a DONE. That is
what a killed server can have run without telling anyone, so at most a window
of casts run twice per server lost (doc/guarantees.md); it is also the depth of
the pipeline between one sender and one server. Each round measures `oslo
alone`'s cast rate (bench/oslo_alone.py: the most any driver could deliver to
one server here; fanout's bound is min(servers, cores) x that), then the
benchmark's casts and fanout rows on zmq:// at each window, and prints them as
shares of `oslo alone`, beside the performance issue's targets (casts 70 %,
fanout 60 %) and what each window allows to run twice.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from bench import oslo_alone, rpc_bench
from bench.config import loopback_config, parse_config
from bench.measure import FULL, QUICK, Counts

ROWS = ("cast throughput", "fanout")


def measure_round(windows: list[int], counts: Counts, workdir: str) -> list[str]:
    """One round: `oslo alone`, then every window; the table's lines."""
    ceiling = oslo_alone._rpc_rate("sink", counts.casts)
    fanout_bound = min(counts.fanout_servers, os.cpu_count() or 1) * ceiling
    lines = [
        f"oslo alone: {ceiling:,.0f} casts/s, fanout bound {fanout_bound:,.0f}/s",
        "| window | casts/s | of oslo alone | fanout deliveries/s | of the bound "
        "| casts run twice per server lost, at most |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for window in windows:
        config = loopback_config(workdir, f"window-{window}.conf", zmq_cast_window=window)
        parse_config(config)  # the client's window is this process's option
        result = rpc_bench.run_column("zmq://", config, counts, notifications=False, rows=ROWS)
        casts, fanout = result.values.get("cast_tput"), result.values.get("fanout_tput")
        lines.append(
            f"| {window} | {_rate(casts)} | {_share(casts, ceiling)} | {_rate(fanout)} "
            f"| {_share(fanout, fanout_bound)} | {window} |"
        )
        lines += [f"note ({window}): {note}" for note in result.notes]
    return lines


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _share(value: float | None, ceiling: float) -> str:
    return "-" if value is None else f"{100 * value / ceiling:.0f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", default="1,16,64,256")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    args = parser.parse_args()
    windows = [int(w) for w in args.windows.split(",")]
    counts = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="cast-window-") as workdir:
        for number in range(1, args.rounds + 1):
            print(f"round {number}:", flush=True)
            for line in measure_round(windows, counts, workdir):
                print(line, flush=True)


if __name__ == "__main__":
    main()
