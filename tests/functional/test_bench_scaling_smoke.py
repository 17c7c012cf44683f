"""The scaling benchmark still runs: ``python -m bench.scaling --quick`` prints both tables.

A smoke test of the benchmark's code, not of performance: no timing is asserted.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from tests.functional import helpers
from tests.functional.test_bench_smoke import table_rows

pytestmark = pytest.mark.timeout(240)

RUN_TIMEOUT = 180  # seconds; the quick run takes about 10 s on a 2-core machine

# Every row of both tables (bench/scaling.py QUICK: the same grid and sizes as a full run).
GRID_ROWS = [
    f"{servers} server{'s' * (servers > 1)}, {threads} thread{'s' * (threads > 1)}"
    for servers in (1, 3, 10)
    for threads in (1, 8, 32)
]
PAYLOAD_ROWS = ["100 B", "1 KiB", "10 KiB", "100 KiB", "1 MiB"]


def run_scaling(args: list[str], env: dict) -> tuple[int, str]:
    """Run the benchmark; on timeout stop it by PID with SIGTERM, so it stops its own children."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.scaling", *args],
        cwd=helpers.REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = process.communicate(timeout=RUN_TIMEOUT)
        return process.returncode, out
    except subprocess.TimeoutExpired:
        process.terminate()  # SIGTERM: its finally blocks stop the servers it started
        out, _ = process.communicate(timeout=60)
        pytest.fail(f"bench.scaling did not finish within {RUN_TIMEOUT} s:\n{out}")


def test_quick_run_prints_every_row(tmp_path):
    runtime = tmp_path / "runtime"  # keep the embedded matchmaker's defaults private too
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    out_dir = tmp_path / "out"

    code, out = run_scaling(["--quick", "--out", str(out_dir)], env)

    assert code == 0, out
    rows = table_rows(out)
    for row in GRID_ROWS + PAYLOAD_ROWS:
        assert row in rows, f"row {row!r} missing:\n{out}"
        assert "-" not in rows[row], f"a value of {row!r} is missing:\n{out}"
    assert "note: " not in out, out  # a loop that failed
    assert (out_dir / "scaling.json").exists(), out
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out_dir / "scaling.png").stat().st_size > 0, out
