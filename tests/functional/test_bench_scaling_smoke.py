"""The scaling benchmark still runs: ``python -m bench.studies.scaling --quick`` prints both tables.

A smoke test of the benchmark's code, not of performance: no timing is asserted.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from tests.functional.test_bench_smoke import run_bench, table_rows

pytestmark = pytest.mark.timeout(240)

# Every row of both tables (bench/studies/scaling.py QUICK: the same grid and sizes as a full run).
GRID_ROWS = [
    f"{servers} server{'s' * (servers > 1)}, {threads} thread{'s' * (threads > 1)}"
    for servers in (1, 3, 10)
    for threads in (1, 8, 32)
]
PAYLOAD_ROWS = ["100 B", "1 KiB", "10 KiB", "100 KiB", "1 MiB"]


def test_quick_run_prints_every_row(tmp_path):
    runtime = tmp_path / "runtime"  # keep the embedded matchmaker's defaults private too
    runtime.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    out_dir = tmp_path / "out"

    code, out = run_bench(["--quick", "--out", str(out_dir)], env, "bench.studies.scaling")

    assert code == 0, out
    rows = table_rows(out)
    for row in GRID_ROWS + PAYLOAD_ROWS:
        assert row in rows, f"row {row!r} missing:\n{out}"
        assert "-" not in rows[row], f"a value of {row!r} is missing:\n{out}"
    assert "note: " not in out, out  # a loop that failed
    assert (out_dir / "scaling.json").exists(), out
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out_dir / "scaling.png").stat().st_size > 0, out
