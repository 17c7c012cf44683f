"""The fault rows of the scale harness count survivors, dead and restarted hosts apart."""

from __future__ import annotations

from bench.scale import fault_report

KILL, RESTART, READY = 100.0, 170.0, 172.0


def cast_id(host: str, sent: float) -> str:
    return f"{host}:{sent:.3f}:0123456789ab"


def fanout_entries(seqs: range, hosts: int, twice: int = 0) -> dict:
    return {str(s): {"copies": hosts + twice, "hosts": hosts, "delays": []} for s in seqs}


def scenario(restarted_fanout: dict, survivor_casts: dict, back_casts: dict) -> dict:
    """Hosts a, b survive (one process); host v is killed at 100 s, back at 172 s."""
    api = {
        "fanouts": [{"seq": s} for s in range(200)],
        "casts": [cast_id("a", 50), cast_id("b", 120), cast_id("v", 130), cast_id("v", 180)],
        "call_failed_hosts": ["v", "v"],
    }
    survivors = {
        "name": "hosts-1",
        "hosts": 2,
        "fanout": fanout_entries(range(200), 2),
        "casts": survivor_casts,
    }
    restarted = {
        "name": "hosts-0-again",
        "hosts": 1,
        "fanout": restarted_fanout,
        "casts": back_casts,
        "first": {"v": [173.5, 173]},
    }
    fault = {
        "name": "hosts",
        "kill": KILL,
        "restart": RESTART,
        "ready": READY,
        "restarted": ["hosts-0-again"],
        "sends": {"lines": 40, "last": 148.0},
    }
    return fault_report.summarize(fault, api, [survivors, restarted], {"v"})


def test_everything_delivered_once_counts_clean():
    survivor_casts = {cast_id("a", 50): 1, cast_id("b", 120): 1}
    back_casts = {cast_id("v", 130): 1, cast_id("v", 180): 1}
    values = scenario(fanout_entries(range(173, 200), 1), survivor_casts, back_casts)

    assert values["fault_survivor_fanout"] == "400 / 400 / 0"
    assert values["fault_survivor_casts"] == "2 / 2 / 0 / 0"
    assert values["fault_killed"] == "1 / 1"
    assert values["fault_stop_sending_s"] == 48.0
    assert values["fault_stopped_sending"]
    assert values["fault_down_calls"] == "2 / 0"
    assert values["fault_down_casts"] == "1 / 1 / 0"  # the cast sent at 130 s, while down
    assert values["fault_back_casts"] == "1 / 1 / 0 / 0"  # the one sent after READY
    assert values["fault_back_s"] == 3.5
    assert values["fault_back_fanout"] == "27 / 27 / 0"  # seq 173..199, from its first on


def test_a_gap_after_joining_and_a_duplicate_are_counted():
    fanout = fanout_entries(range(173, 200), 1)
    del fanout["180"]  # missed after the host had joined
    fanout["190"]["copies"] = 2  # run twice
    values = scenario(fanout, {cast_id("a", 50): 2}, {})

    assert values["fault_back_missing"] == 1
    assert values["fault_back_twice"] == 1
    assert values["fault_survivor_casts"] == "2 / 1 / 1 / 1"  # b's lost, a's run twice
    assert values["fault_down_casts_lost"] == 1
    assert values["fault_back_casts_lost"] == 1
