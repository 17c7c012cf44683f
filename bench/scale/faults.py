"""Faults a scale run injects during its traffic window (``--fault``), and what they measure.

* ``hosts``: the first tenth of the hosts (processes of their own) are SIGKILLed ``--fault-at``
  seconds into the traffic and started again ``--restart-after`` seconds later, on the same
  addresses. On rabbit:// the probe is the broker's own view: how long their fanout queues
  outlive them (``rabbitmqctl``, a private node only); on zmq:// the API logs each fanout copy
  it sends them and loses (see ``sends.py``).
* ``redis-restart``: the private Redis is SIGKILLed and started again empty on its port; the
  registrations and Redis's commands per second are sampled until every host is back.
* ``sentinel-failover``: the master of a private Sentinel deployment is SIGKILLed; the time
  until the sentinels promote the replica, then the registrations on the new master.

Each fault runs in a thread of the run controller and returns a dict kept in the run's JSON;
``fault_report.py`` turns it and the processes' counts into rows.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

from bench.procs import Child
from bench.scale.registrations import RegistrationWatch
from harness.redis_server import RedisServer
from harness.sentinel import SentinelCluster

FAULTS = ("hosts", "redis-restart", "sentinel-failover")
PROBE_FOR = 90.0  # seconds a probe watches at most


def victim_count(hosts: int) -> int:
    """How many hosts the ``hosts`` fault kills: a tenth, at least one.

    >>> victim_count(100), victim_count(300), victim_count(5)
    (10, 30, 1)
    """
    return max(1, hosts // 10)


def wait_until_time(at: float) -> None:
    """Sleep until ``time.time()`` reaches ``at`` (a point in the run's schedule)."""
    while time.time() < at:
        time.sleep(min(0.2, at - time.time()))


class HostsTarget(Protocol):
    """What the hosts fault needs of the run controller's deployment."""

    def victims(self) -> list[Child]: ...

    def restart(self, child: Child) -> Child: ...

    def orphan_fanout_queues(self) -> tuple[int, int] | None: ...


class FaultThread:
    """Runs a fault's ``work(start)`` in a thread; ``result()`` waits for it (errors re-raised).

    The thread outlives its work until ``release()``: processes it started (restarted hosts)
    die with the thread that forked them (``PR_SET_PDEATHSIG`` in ``common.setup_process``).
    """

    def __init__(self, work: Callable[[float], dict], start: float) -> None:
        self.value: dict = {}
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.released = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(work, start), daemon=True)
        self.thread.start()

    def _run(self, work: Callable[[float], dict], start: float) -> None:
        try:
            self.value = work(start)
        except BaseException as exc:  # handed to the run controller by result()
            self.error = exc
        self.done.set()
        self.released.wait()

    def result(self, timeout: float) -> dict:
        if not self.done.wait(timeout):
            raise TimeoutError("the fault did not finish")
        if self.error is not None:
            raise self.error
        return self.value

    def release(self) -> None:
        """Let the thread end (after the processes it started were stopped)."""
        self.released.set()


def kill_and_restart(
    target: HostsTarget, at: float, restart_after: float
) -> Callable[[float], dict]:
    """The ``hosts`` fault: SIGKILL the victims, probe, start them again."""

    def work(start: float) -> dict:
        wait_until_time(start + at)
        victims = target.victims()
        killed = time.time()
        for child in victims:
            child.process.send_signal(signal.SIGKILL)  # ours, by PID
        for child in victims:
            child.process.wait()
        out: dict = {"kill": killed}
        restart_at = killed + restart_after
        counts = _orphan_counts(target, restart_at)
        if counts:
            out["orphan_queues"] = [[round(t - killed, 2), *found] for t, found in counts]
            gone = [t for t, (queues, _) in counts if queues == 0]
            out["broker_forgot_s"] = gone[0] - killed if gone else None
        wait_until_time(restart_at)
        out["restart"] = time.time()
        out["restarted"] = [target.restart(child).name for child in victims]
        out["ready"] = time.time()
        return out

    return work


def restart_redis(
    redis: RedisServer, watch: RegistrationWatch, at: float
) -> Callable[[float], dict]:
    """The ``redis-restart`` fault: Redis SIGKILLed and started empty on the same port."""

    def work(start: float) -> dict:
        wait_until_time(start + at)
        began = time.time()
        redis.stop(signal.SIGKILL)
        redis.start()
        back = time.time()
        samples = watch.until_complete(redis.client(), began, PROBE_FOR)
        return {"kill": began, "back_s": back - began, **samples}

    return work


def fail_over(
    cluster: SentinelCluster, watch: RegistrationWatch, at: float
) -> Callable[[float], dict]:
    """The ``sentinel-failover`` fault: the master SIGKILLed, the replica promoted."""

    def work(start: float) -> dict:
        wait_until_time(start + at)
        began = time.time()
        cluster.kill_master()
        master = cluster.wait_for_promotion()
        promoted = time.time()
        samples = watch.until_complete(master.client(), began, PROBE_FOR)
        return {"kill": began, "promoted_s": promoted - began, **samples}

    return work


def _orphan_counts(target: HostsTarget, until: float) -> list[tuple[float, tuple[int, int]]]:
    """(time, (fanout queues without consumer, messages in them)) until none is left."""
    counts: list[tuple[float, tuple[int, int]]] = []
    while time.time() < until:
        found = target.orphan_fanout_queues()
        if found is None:
            return counts  # not a broker we can ask
        counts.append((time.time(), found))
        if found[0] == 0 and len(counts) > 1:  # the first look may precede the broker's notice
            return counts
        time.sleep(1.0)
    return counts
