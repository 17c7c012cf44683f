"""A server frozen under load (SIGSTOP, then SIGCONT) runs nothing its senders sent elsewhere.

Two servers on one topic take casts and calls; one is frozen for about a
second, about ``zmq_heartbeat_timeout`` (its senders declare it lost at that
point) and ten seconds, then resumed. Counted from the servers' journals:
no cast or call is lost, every call is answered, and after it resumes the
frozen server starts nothing that ran elsewhere. What may run twice is what
a killed server leaves too (doc/guarantees.md): casts it ran before the
freeze whose DONE had not left the process, and those it was running at the
instant it froze (it says how many when it wakes up). The journal read while
the server is stopped tells the two apart.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from harness.wait import wait_until
from tests.faults.load import IN_FLIGHT_AT_THE_FAULT, Load, assert_none_lost
from tests.functional.helpers import unique

# Smaller than the kill tests' load: there are twelve of these.
CASTS, CALLS = 1000, 200
FREEZES = {"1s": 1.0, "heartbeat-timeout": 3.0, "10s": 10.0}  # zmq_heartbeat_timeout is 3 s
_RUNNING = re.compile(r"(\d+) were running and may also have been run elsewhere")


def running_at_pauses(log: str) -> int:
    """What the server said was running when it noticed it had been paused."""
    return sum(int(n) for n in _RUNNING.findall(log))


def stopped(pid: int) -> bool:
    """Every thread of ``pid`` has stopped (kill() returns before the signal lands)."""
    states = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/stat") as stat:
            states.append(stat.read().rsplit(")", 1)[1].split()[0])
    return all(state in ("T", "t") for state in states)


@pytest.mark.parametrize("mode", ["threading", "eventlet"])
@pytest.mark.parametrize("freeze", FREEZES, ids=list(FREEZES))
def test_a_frozen_server_runs_nothing_twice_when_it_resumes(deployment, tmp_path, freeze, mode):
    load = Load(deployment, unique("freeze"), tmp_path, casts=CASTS, calls=CALLS)
    victim, survivor = load.server("victim", mode), load.server("survivor", mode)
    try:
        load.start()
        assert load.halfway.wait(120)
        os.kill(victim.proc.pid, signal.SIGSTOP)
        wait_until(lambda: stopped(victim.proc.pid), what="the victim stopped")
        ran_before_freeze = set(load.journal("victim"))  # final until SIGCONT
        time.sleep(FREEZES[freeze])  # the fault itself: how long the process is stopped
        os.kill(victim.proc.pid, signal.SIGCONT)
        load.finish()
        casts = load.wait_for_every_cast()
        victim.stop()  # graceful: whatever it still runs is journaled before it exits
        survivor.stop()
        running = running_at_pauses(load.server_log("victim"))
        calls = load.call_executions()
        twice = {tag: n for tag, n in (casts + calls).items() if n > 1}
        started_after = {tag for tag in twice if tag not in ran_before_freeze}
        print(
            f"{freeze}/{mode}: ran twice {len(twice)} ({len(started_after)} finished after the "
            f"freeze), running at the freeze {running}"
        )
        assert_none_lost(casts, may_repeat=IN_FLIGHT_AT_THE_FAULT + running, casts=CASTS)
        # Nothing the server started after it resumed ran elsewhere too.
        assert len(started_after) <= running, started_after
        assert load.call_results["timeout"] == 0, load.call_results
        assert load.call_results["ok"] + load.call_results["server lost"] == CALLS
        answered = {f"k{i}" for i in range(CALLS)} - set(load.calls_lost)
        assert answered <= set(calls), "every answered call ran"
        # A call whose sender was told ServerLost ran at most once, and only if
        # it had run (its REPLY still in the process) or was running at the freeze.
        late = [
            tag
            for tag in load.calls_lost
            if calls[tag] and tag not in ran_before_freeze and not running
        ]
        assert not late, f"calls run after ServerLost: {late}"
    finally:
        victim.kill()
        survivor.kill()
        load.close()
