"""The benchmark still runs: ``python -m bench.run --quick --only zmq,raw,oslo`` prints its table.

A smoke test of the benchmark's code, not of performance: no timing is asserted.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from tests.functional import helpers

pytestmark = pytest.mark.timeout(240)

RUN_TIMEOUT = 180  # seconds; the quick run takes about 10 s on a 2-core machine

# Every row of the table, with the quick counts (bench/measure.py QUICK).
ROWS = [
    "call latency p50, 100 B",
    "call latency p99, 100 B",
    "call latency p50, 10 KiB",
    "call latency p99, 10 KiB",
    "calls/s, 8 threads, 1 transport (raw: †)",
    "casts/s until the server has all, 1 thread",
    "fanout deliveries/s, 3 servers",
    "notifications/s until the listener has all",
]
RAW_ROWS = ROWS[:5]  # the rows raw pyzmq has a number for
# The issue 16 targets that zmq://, raw pyzmq and oslo alone can judge (bench/targets.py).
TARGET_ROWS = [
    "call p50, 100 B",
    "calls/s, 8 threads",
    "casts/s",
    "fanout deliveries/s",
    "notifications/s, zmq://",
]


def run_bench(args: list[str], env: dict, module: str = "bench.run") -> tuple[int, str]:
    """Run a benchmark module (``python -m <module>``) from the repository root.

    On timeout it is stopped by PID with SIGTERM, so it stops its own children.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=helpers.REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = process.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # its finally blocks stop what it started
        try:
            out, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
        pytest.fail(f"{module} did not finish within {RUN_TIMEOUT} s:\n{out}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, out


def table_rows(out: str) -> dict[str, list[str]]:
    """The printed table's rows: label -> the other cells."""
    rows = {}
    for line in out.splitlines():
        if line.startswith("| ") and not line.startswith("|--"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_quick_run_prints_every_row(tmp_path):
    # The embedded matchmaker and notification store default to XDG_RUNTIME_DIR: keep them
    # private to this run (the benchmark also points zmq_matchmaker_path into its temp dir).
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))

    code, out = run_bench(["--quick", "--only", "zmq,raw,oslo"], env)

    assert code == 0, out
    rows = table_rows(out)
    assert rows.get("metric") == [
        "zmq://",
        "raw pyzmq",
        "oslo alone",
        "zmq vs rabbit",
        "zmq vs raw",
        "best vs rabbit",
    ], out
    for row in ROWS:
        assert row in rows, f"row {row!r} missing:\n{out}"
        zmq_cell = rows[row][0]
        assert zmq_cell not in ("-", "unavailable"), f"no zmq:// value for {row!r}:\n{out}"
    for row in RAW_ROWS:
        assert rows[row][1] not in ("-", "unavailable"), f"no raw value for {row!r}:\n{out}"
    for row in ROWS:
        assert rows[row][2] not in ("-", "unavailable"), f"no oslo alone value for {row!r}:\n{out}"
    for row in TARGET_ROWS:
        assert rows.get(row, [""])[-1] in ("yes", "no"), f"target {row!r} not judged:\n{out}"
    notes = [line for line in out.splitlines() if line.startswith("    note: ")]
    broken = [note for note in notes if "failed" in note or "LOST" in note]
    assert not broken, out  # a row that raised, or messages that never arrived
    assert "rabbit" not in out.split("\n| metric")[0], out  # no RabbitMQ looked up or started


@pytest.mark.parametrize(
    "args, labels",
    [
        (
            [],
            [
                "call starts",
                "caller sends it on its own connection",
                "server I/O thread reads the request",
                "server I/O thread hands it to the executor",
                "endpoint returned, reply encoded",
                "caller reads the reply on its own connection",
            ],
        ),
        (
            ["--caller-sockets", "0"],
            [
                "call starts",
                "caller hands the request to the I/O thread",
                "client I/O thread sends it",
                "server I/O thread reads the request",
                "server I/O thread hands it to the executor",
                "endpoint returned, reply encoded",
                "client I/O thread hands the reply to the caller",
                "caller woken",
            ],
        ),
    ],
    ids=["own-connection", "through-the-io-thread"],
)
def test_call_timeline_prints_every_step(tmp_path, args, labels):
    # bench/studies/call_timeline.py wraps driver methods by name: this fails if one is renamed.
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))

    code, out = run_bench(["--calls", "30", *args], env, "bench.studies.call_timeline")

    assert code == 0, out
    rows = table_rows(out)
    for label in labels:
        assert label in rows, f"no step from {label!r}:\n{out}"
    assert "**sum of the medians**" in out, out


def test_wire_floor_prints_every_rate(tmp_path):
    args = ["--quick", "--rounds", "1"]
    code, out = run_bench(args, dict(os.environ), "bench.studies.wire_floor")

    assert code == 0, out
    line = next((row for row in out.splitlines() if row.startswith("round 1:")), "")
    casts, fanout = line.split("fanout", 1)
    numbers = re.findall(r"(?:oslo alone|wire floor|raw pyzmq|target) ([\d,.]+)", casts)
    assert len(numbers) == 8, out  # casts, calls/s and p50 of each, the target
    assert all(float(n.replace(",", "")) > 0 for n in numbers), out
    windowed = re.findall(r"window (\d+) ([\d,]+)", casts)
    assert [w for w, _ in windowed] == ["16", "64"], out  # the default --windows
    assert all(int(rate.replace(",", "")) > 0 for _, rate in windowed), out
    # Fanout to three servers: the bound, the floor back to back and at each window.
    rates = re.findall(r"(bound|wire floor|window \d+) ([\d,]+)", fanout)
    assert [what for what, _ in rates] == ["bound", "wire floor", "window 16", "window 64"], out
    assert all(int(rate.replace(",", "")) > 0 for _, rate in rates), out


def test_cast_window_prints_a_row_per_window(tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    args = ["--quick", "--rounds", "1", "--windows", "1,16"]
    code, out = run_bench(args, env, "bench.studies.cast_window")

    assert code == 0, out
    rows = {row.split("|")[1].strip(): row for row in out.splitlines() if row.startswith("| ")}
    for window in ("1", "16"):
        cells = [cell.strip() for cell in rows[window].split("|")[2:-1]]
        assert cells[0] != "-" and cells[2] != "-", out  # casts and fanout measured
        assert cells[4] == window, out  # what may run twice is the window
