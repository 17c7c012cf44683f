"""How fast clients see servers come and go, per matchmaker, with and without push.

    python -m bench.studies.discovery [--rounds 3]

For each matchmaker (zmq://, zmq+redis://, zmq+etcd:// polling, zmq+etcd:// with its
watch), with private Redis and etcd servers (harness/) and zmq_target_expire = 10,
zmq_target_update = 3, zmq_target_cache_ttl = 1 (the default):

* start: a second server process prints READY (it has registered) while a client calls
  ``whoami`` in a loop; the time until the first call it answers was sent;
* stop: SIGTERM to it; the time from then to the last call it answered was sent;
* SIGKILL: kill -9 of it; the time until a client's Directory (same options) stops
  listing it, polled every 5 ms;
* idle lookups: matchmaker lookups one client key costs per minute when nothing changes.

Prints one table row per matchmaker (medians over the rounds).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import threading
import time
import warnings

import oslo_messaging

from harness.config import write_config
from harness.etcd_server import EtcdServer
from harness.redis_server import RedisServer
from harness.wait import wait_until
from tests.functional.helpers import ServerProcess, client, make_conf, unique
from zmqdriver import addressing, matchmaker, options
from zmqdriver.discovery import Directory

EXPIRE, UPDATE, CACHE_TTL = 10, 3, 1.0


class Calls:
    """``whoami`` calls in a loop from one thread: (time sent, who answered)."""

    def __init__(self, transport, topic: str) -> None:
        self.answers: list[tuple[float, str]] = []
        self._caller = client(transport, topic, timeout=30)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                self.answers.append((sent, self._caller.call({}, "whoami")))
            except oslo_messaging.MessagingException:
                pass
            time.sleep(0.002)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)


def one_round(url: str, watch: bool, workdir: str) -> dict[str, float]:
    prefix = unique("disc")
    config = write_config(
        os.path.join(workdir, f"{prefix}.conf"),
        url,
        zmq_matchmaker_prefix=prefix,
        zmq_matchmaker_path=os.path.join(workdir, "mm.sqlite"),
        zmq_target_expire=EXPIRE,
        zmq_target_update=UPDATE,
        zmq_target_cache_ttl=CACHE_TTL,
        zmq_matchmaker_watch=watch,
    )
    conf = make_conf(config)
    options.register(conf)
    topic = unique("t")
    first = ServerProcess(config, topic, "first")
    transport = oslo_messaging.get_rpc_transport(conf)
    calls = Calls(transport, topic)
    result: dict[str, float] = {}
    try:
        wait_until(lambda: calls.answers, timeout=30, what="the first server")
        second = ServerProcess(config, topic, "second")
        ready = time.monotonic()
        wait_until(lambda: any(who == "second" for _, who in calls.answers), timeout=30)
        result["start"] = max(0.0, min(t for t, who in calls.answers if who == "second") - ready)
        time.sleep(1.0)
        stopping = time.monotonic()
        second.stop()
        time.sleep(1.0)
        result["stop"] = max(t for t, who in calls.answers if who == "second") - stopping
        result.update(killed(conf, url, config, topic, prefix, watch))
    finally:
        calls.close()
        transport.cleanup()
        first.stop()
    return result


def killed(conf, url, config, topic, prefix, watch) -> dict[str, float]:
    """SIGKILL a server: seconds until a client's Directory stops listing it; idle lookups."""
    mm = matchmaker.load(conf, oslo_messaging.TransportURL.parse(conf, url))
    counting = CountingLookups(mm)
    key = addressing.rpc_key(prefix, addressing.DEFAULT_EXCHANGE, topic)
    directory = Directory(counting, CACHE_TTL, watch_prefix=f"{prefix}/rpc/" if watch else None)
    victim = ServerProcess(config, topic, "victim")
    try:
        wait_until(lambda: len(directory.endpoints(key)) == 2, timeout=30, what="the victim")
        time.sleep(1.0)  # the watch, if any, is up
        counting.count = 0
        time.sleep(10.0)
        idle_per_minute = counting.count * 6
        os.kill(victim.proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        while len(directory.endpoints(key)) == 2:
            time.sleep(0.005)
        return {"sigkill": time.monotonic() - killed_at, "idle_lookups": idle_per_minute}
    finally:
        victim.kill()
        directory.close()
        mm.close()


class CountingLookups:
    """A matchmaker that counts the lookups made through it."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.count = 0

    def lookup(self, key: str) -> list[str]:
        self.count += 1
        return self.inner.lookup(key)

    def watch(self, prefix, on_change):
        return self.inner.watch(prefix, on_change)


def main() -> None:
    warnings.simplefilter("ignore")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zmqdriver-discovery-") as workdir:
        redis = RedisServer(os.path.join(workdir, "redis"))
        etcd = EtcdServer(os.path.join(workdir, "etcd"))
        redis.start()
        etcd.start()
        try:
            kinds = [
                ("zmq:// (poll)", "zmq://", False),
                ("zmq+redis:// (poll)", redis.url, False),
                ("zmq+etcd:// (poll)", etcd.url, False),
                ("zmq+etcd:// (push)", etcd.url, True),
            ]
            print("| matchmaker | start -> first request | stop -> last request | "
                  "SIGKILL -> gone from lookups | lookups/min per idle key |")  # fmt: skip
            print("|---|---|---|---|---|")
            for name, url, watch in kinds:
                rounds = [one_round(url, watch, workdir) for _ in range(args.rounds)]
                med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
                print(
                    f"| {name} | {med['start'] * 1000:.0f} ms | {med['stop'] * 1000:.0f} ms | "
                    f"{med['sigkill']:.2f} s | {med['idle_lookups']:.0f} |",
                    flush=True,
                )
        finally:
            redis.stop()
            etcd.stop()


if __name__ == "__main__":
    main()
