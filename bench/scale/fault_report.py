"""The rows of a fault (faults.py): exact counts for the hosts that lived, times of recovery.

The run's other rows still count every host; with the ``hosts`` fault they miss what the
killed hosts had received (lost with their process). These rows split the hosts into
survivors (never killed), killed hosts while down, and the same hosts once restarted.
"""

from __future__ import annotations

from collections import Counter

# (key, label, format), appended to report.ROWS; a run without a fault shows none of them.
ROWS = [
    ("fault", "fault", "{}"),
    ("fault_survivor_fanout", "survivors: fanout copies delivered / expected / run twice", "{}"),
    ("fault_survivor_casts", "survivors: directed casts sent / run / lost / run twice", "{}"),
    ("fault_killed", "hosts killed (SIGKILL) / restarted", "{}"),
    ("fault_stop_sending_s", "API stopped sending to killed hosts after (s)", "{:.1f}"),
    ("fault_sends_lost", "  copies the API sent them and lost (log lines)", "{}"),
    ("fault_broker_forgot_s", "broker deleted killed hosts' fanout queues after (s)", "{:.1f}"),
    ("fault_orphans", "  their queues left / fanout copies piled in them, at restart", "{}"),
    ("fault_down_calls", "directed calls failed: to killed hosts / to others", "{}"),
    ("fault_down_casts", "casts to killed hosts while down: sent / run later / twice", "{}"),
    ("fault_ready_s", "restarted hosts: their process ready (servers started) after (s)", "{:.1f}"),
    ("fault_back_s", "restarted hosts: time until the last one had a fanout (s)", "{:.1f}"),
    ("fault_back_fanout", "restarted hosts: later fanouts delivered / expected / twice", "{}"),
    ("fault_back_casts", "restarted hosts: casts sent / run / lost / run twice", "{}"),
    ("fault_redis_back_s", "Redis answering again after (s)", "{:.1f}"),
    ("fault_promoted_s", "Sentinel promoted the replica after (s)", "{:.1f}"),
    ("fault_first_s", "first host registered again after (s)", "{:.1f}"),
    ("fault_half_s", "half the hosts registered again after (s)", "{:.1f}"),
    ("fault_registered_s", "every host registered again after (s)", "{:.1f}"),
    ("fault_peak_ops", "Redis commands/s while they registered, peak (0.25 s)", "{:.0f}"),
]


def summarize(fault: dict, api: dict, hosts: list[dict], victims: set[str]) -> dict:
    """The fault rows of one run. ``hosts``: every hosts process's result with its ``name``."""
    v: dict = {"fault": fault["name"]}
    if fault["name"] != "hosts":
        for key in ("redis_back_s", "promoted_s", "first_s", "half_s", "registered_s"):
            v[f"fault_{key}"] = fault.get(key.replace("redis_", ""))
        v["fault_peak_ops"] = fault.get("peak_ops")
        return v
    restarted = [r for r in hosts if r["name"] in fault["restarted"]]
    survivors = [r for r in hosts if r["name"] not in fault["restarted"]]
    v.update(_survivors(api, survivors, victims))
    v["fault_killed"] = f"{len(victims)} / {sum(r['hosts'] for r in restarted)}"
    if "sends" in fault:
        last = fault["sends"]["last"]
        v["fault_stop_sending_s"] = last - fault["kill"] if last else 0.0
        v["fault_sends_lost"] = fault["sends"]["lines"]
        # Stopped: the last fanout before the restart (one a second) had no copy for them.
        v["fault_stopped_sending"] = last is None or last < fault["restart"] - 1.5
    v["fault_broker_forgot_s"] = fault.get("broker_forgot_s")
    if fault.get("orphan_queues"):
        _, queues, messages = fault["orphan_queues"][-1]
        v["fault_orphans"] = f"{queues} / {messages}"
    failed = api.get("call_failed_hosts", [])
    down = sum(1 for host in failed if host in victims)
    v["fault_down_calls"] = f"{down} / {len(failed) - down}"
    v.update(_restarted(fault, api, restarted, victims))
    return v


def _runs(results: list[dict]) -> Counter:
    runs: Counter = Counter()
    for result in results:
        runs.update(result.get("casts", {}))
    return runs


def _fanout_counts(results: list[dict]) -> tuple[Counter, Counter]:
    """Per fanout seq: copies run, and distinct hosts that ran one, over ``results``."""
    copies, distinct = Counter(), Counter()
    for result in results:
        for seq, entry in result.get("fanout", {}).items():
            copies[seq] += entry["copies"]
            distinct[seq] += entry["hosts"]
    return copies, distinct


def _cast_target(cast_id: str) -> tuple[str, float]:
    """``host:sent:uuid`` (api.py) -> (host, sent)."""
    host, sent, _ = cast_id.split(":")
    return host, float(sent)


def _tally(ids: list[str], runs: Counter) -> tuple[int, int, int, int]:
    """sent, run, lost, run twice."""
    ran = sum(1 for c in ids if runs[c])
    return len(ids), ran, len(ids) - ran, sum(1 for c in ids if runs[c] > 1)


def _survivors(api: dict, survivors: list[dict], victims: set[str]) -> dict:
    fanouts = [str(f["seq"]) for f in api["fanouts"]]
    copies, distinct = _fanout_counts(survivors)
    count = sum(r["hosts"] for r in survivors)
    delivered = sum(distinct[s] for s in fanouts)
    twice = sum(copies[s] - distinct[s] for s in fanouts)
    ids = [c for c in api["casts"] if _cast_target(c)[0] not in victims]
    sent, ran, lost, dup = _tally(ids, _runs(survivors))
    return {
        "fault_survivor_fanout": f"{delivered} / {len(fanouts) * count} / {twice}",
        "fault_survivor_missing": len(fanouts) * count - delivered,
        "fault_survivor_twice": twice,
        "fault_survivor_casts": f"{sent} / {ran} / {lost} / {dup}",
        "fault_survivor_casts_lost": lost,
        "fault_survivor_casts_twice": dup,
    }


def _restarted(fault: dict, api: dict, restarted: list[dict], victims: set[str]) -> dict:
    runs = _runs(restarted)
    to_victims = [c for c in api["casts"] if _cast_target(c)[0] in victims]
    down = [c for c in to_victims if fault["kill"] <= _cast_target(c)[1] <= fault["ready"]]
    after = [c for c in to_victims if _cast_target(c)[1] > fault["ready"]]
    sent, ran, _lost, dup = _tally(down, runs)
    v = {"fault_down_casts": f"{sent} / {ran} / {dup}", "fault_down_casts_lost": sent - ran}
    v["fault_ready_s"] = fault["ready"] - fault["restart"]
    sent, ran, lost, dup = _tally(after, runs)
    v["fault_back_casts"] = f"{sent} / {ran} / {lost} / {dup}"
    v["fault_back_casts_lost"], v["fault_back_casts_twice"] = lost, dup
    firsts = [first for r in restarted for first in r.get("first", {}).values()]
    hosts = sum(r["hosts"] for r in restarted)
    if len(firsts) < hosts or not firsts:
        return v  # some restarted host never had a fanout: no time, no count
    v["fault_back_s"] = max(t for t, _ in firsts) - fault["restart"]
    joined = max(seq for _, seq in firsts)  # from here on every restarted host is in
    later = [str(f["seq"]) for f in api["fanouts"] if f["seq"] >= joined]
    copies, distinct = _fanout_counts(restarted)
    delivered = sum(distinct[s] for s in later)
    twice = sum(copies[s] - distinct[s] for s in copies)
    v["fault_back_fanout"] = f"{delivered} / {len(later) * hosts} / {twice}"
    v["fault_back_missing"], v["fault_back_twice"] = len(later) * hosts - delivered, twice
    return v
