"""The performance issue's targets as bench.run and bench.targets judge them."""

from __future__ import annotations

import json
import re

import pytest

from bench import targets

CEILING = {  # oslo alone, and the raw wire's p50
    "oslo": {
        "lat_small_p50": 0.2,
        "call_tput": 10000.0,
        "cast_tput": 10000.0,
        "fanout_tput": 20000.0,
        "notify_tput": 10000.0,
    },
    "raw": {"lat_small_p50": 0.2},
}


def judged(values: dict) -> dict[str, bool]:
    return {v.row: v.held for v in targets.verdicts({**CEILING, **values})}


@pytest.mark.parametrize(
    "row, column, key, at_target",
    [
        ("calls/s, 8 threads", "zmq", "call_tput", 5000.0),
        ("casts/s", "zmq", "cast_tput", 7000.0),
        ("fanout deliveries/s", "zmq", "fanout_tput", 12000.0),
        ("notifications/s, zmq://", "zmq", "notify_tput", 5000.0),
        ("notifications/s, zmq+redis://", "zmq+redis", "notify_tput", 5000.0),
    ],
)
def test_a_share_holds_at_its_target_and_not_below(row, column, key, at_target):
    assert judged({column: {key: at_target}})[row] is True
    assert judged({column: {key: at_target - 1}})[row] is False


def test_call_p50_may_add_one_and_a_half_raw_round_trips_to_oslo_alone():
    # 0.2 ms of oslo alone + 1.5 x 0.2 ms of raw pyzmq = 0.5 ms
    assert judged({"zmq": {"lat_small_p50": 0.5}})["call p50, 100 B"] is True
    assert judged({"zmq": {"lat_small_p50": 0.501}})["call p50, 100 B"] is False


def test_a_cost_is_judged_by_its_worst_row():
    zmq = {"lat_small_p50": 0.5, "lat_small_p99": 1.0, "cast_tput": 6000.0}
    curve = {"lat_small_p50": 0.5, "lat_small_p99": 1.3, "cast_tput": 6000.0}
    assert judged({"zmq": zmq, "zmq-curve": curve})["CURVE cost"] is True
    slower = {**curve, "cast_tput": 4000.0}  # 1.5x the time per cast
    verdict = {v.row: v for v in targets.verdicts({"zmq": zmq, "zmq-curve": slower})}
    assert verdict["CURVE cost"].held is False
    assert verdict["CURVE cost"].measured == "1.00-1.50x over 3 rows"
    assert judged({"zmq": zmq, "zmq-eventlet": slower})["eventlet cost"] is True  # 1.5x allowed


def test_a_target_without_its_columns_is_left_out():
    # No raw pyzmq: no p50 target; no zmq+redis://, CURVE or eventlet column: none of theirs.
    found = targets.verdicts({"zmq": {"lat_small_p50": 0.3, "cast_tput": 1.0}, "oslo": {}})
    assert found == []
    assert set(judged({"zmq": {"cast_tput": 1.0}})) == {"casts/s"}


def test_saved_runs_are_tallied(tmp_path, capsys):
    def save(name: str, casts: float) -> str:
        results = {column: {"values": values} for column, values in CEILING.items()}
        results["zmq"] = {"values": {"cast_tput": casts}}
        results["rabbit"] = {"values": {}, "unavailable": "no broker"}
        path = tmp_path / name
        path.write_text(json.dumps({"machine": {"zmqdriver": "x"}, "results": results}))
        return str(path)

    assert targets.main([save("a.json", 8000.0), save("b.json", 6000.0)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\| casts/s +\| +1 of 2 \|", out), out
    assert "80.0 % (8,000 / 10,000/s)" in out and "60.0 % (6,000 / 10,000/s)" in out
