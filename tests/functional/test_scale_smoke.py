"""A reduced scale run: ``python -m bench.scale --hosts 30`` for a few seconds on zmq+redis://.

Exact counts only, no timing: every host answered, every fanout reached every host exactly
once, no directed cast was lost or run twice, every notification reached the pool.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.functional.test_bench_smoke import run_bench

pytestmark = [pytest.mark.timeout(240), pytest.mark.redis]

HOSTS = 30


def test_every_fanout_and_cast_arrives_exactly_once(tmp_path):
    saved = tmp_path / "scale.json"
    args = ["--hosts", str(HOSTS), "--per-process", "15", "--duration", "4"]
    args += ["--url", "zmq+redis://", "--json", str(saved), "--drain", "60"]

    code, out = run_bench(args, dict(os.environ), "bench.scale")

    assert code == 0, out
    (run,) = json.loads(saved.read_text())["runs"]
    values = run["values"]
    assert values["up_answered"] == HOSTS, out
    assert values["fanouts"] > 0, out
    assert values["fanout_incomplete"] == 0, out
    assert values["fanout_missing"] == 0, out
    assert values["fanout_duplicates"] == 0, out
    assert values["casts_sent"] > 0, out
    assert values["casts_failed"] == 0, out
    assert values["casts_lost"] == 0, out
    assert values["casts_twice"] == 0, out
    assert values["notifications_received"] == values["notifications_sent"], out
