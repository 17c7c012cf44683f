"""A reduced scale run: ``python -m bench.scale --hosts 30`` for a few seconds on zmq+redis://.

Exact counts only, no timing: every host answered, every fanout reached every host exactly
once, no directed cast was lost or run twice, every notification reached the pool; and with
hosts killed and restarted (``--fault hosts``), the API stopped sending to them, and survivors
and restarted hosts missed nothing and ran nothing twice.
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


KILL_HOSTS = 20  # a tenth of them (2) are killed, in a process of their own


def test_killed_hosts_stop_receiving_and_survivors_miss_nothing(tmp_path):
    """Two hosts SIGKILLed during the traffic, then restarted (``--fault hosts``).

    Records expire after 4 s here (60 s by default), so the API stops sending to the dead
    hosts well before they come back; the restart is what the counts below are about.
    """
    saved = tmp_path / "fault.json"
    args = ["--hosts", str(KILL_HOSTS), "--per-process", "10", "--duration", "13"]
    args += ["--fault", "hosts", "--fault-at", "1", "--restart-after", "9"]
    args += ["--zmq-option", "zmq_target_expire=4", "--zmq-option", "zmq_target_update=1"]
    args += ["--executor-threads", "8", "--url", "zmq+redis://", "--json", str(saved)]
    args += ["--drain", "60"]

    code, out = run_bench(args, dict(os.environ), "bench.scale")

    assert code == 0, out
    (run,) = json.loads(saved.read_text())["runs"]
    values = run["values"]
    assert values["fault_killed"] == "2 / 2", out
    # Killed hosts stop receiving: the API's last copy to them came before their restart.
    assert values["fault_stopped_sending"], out
    # Every survivor had every fanout and every cast sent to it, once.
    assert values["fault_survivor_missing"] == 0, out
    assert values["fault_survivor_twice"] == 0, out
    assert values["fault_survivor_casts_lost"] == 0, out
    assert values["fault_survivor_casts_twice"] == 0, out
    # Casts sent to the dead hosts were held and ran once they were back.
    assert values["fault_down_casts_lost"] == 0, out
    # Once back, the restarted hosts had every later fanout and cast, once.
    assert values["fault_back_missing"] == 0, out
    assert values["fault_back_twice"] == 0, out
    assert values["fault_back_casts_lost"] == 0, out
    assert values["fault_back_casts_twice"] == 0, out
