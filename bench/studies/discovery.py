"""How fast clients see servers come and go, per matchmaker, with and without push.

    python -m bench.studies.discovery [--rounds 3] [--only redis]

For each matchmaker (zmq://, zmq+redis:// and zmq+etcd://, each of the last two polling
and with push), with private Redis and etcd servers (harness/) and zmq_target_expire = 10,
zmq_target_update = 3, zmq_target_cache_ttl = 1 (the default):

* start: a second server process prints READY (it has registered) while a client calls
  ``whoami`` in a loop; the time until the first call it answers was sent;
* stop: SIGTERM to it; from the moment its record left the matchmaker (an uncached
  lookup every 5 ms) until a client's Directory (same options, asked every 5 ms as a
  busy sender would) stops listing it;
* SIGKILL: kill -9 of a third one; the time until its record expires in the matchmaker,
  and from then until that Directory stops listing it;
* idle lookups: matchmaker lookups that Directory makes per minute for its key while
  nothing changes.

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


class Observer:
    """A client's view: a Directory (same options) asked every 5 ms, as a busy sender would."""

    def __init__(
        self, conf, url: str, key: str, watch_prefix: str | None, ttl: float = CACHE_TTL
    ) -> None:
        self.mm = matchmaker.load(conf, oslo_messaging.TransportURL.parse(conf, url))
        self.counting = CountingLookups(self.mm)
        self.directory = Directory(self.counting, ttl, watch_prefix=watch_prefix)
        self.key = key
        self.count = 0  # servers listed at the last ask
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.count = len(self.directory.endpoints(self.key))
            time.sleep(0.005)

    def time_until(self, count: int, since: float) -> float:
        wait_until(lambda: self.count == count, timeout=60, poll=0.001)
        return time.monotonic() - since

    def when(self, count: int) -> float:
        """The time this observer first saw ``count`` servers (waiting for it if need be)."""
        wait_until(lambda: self.count == count, timeout=60, poll=0.0005)
        return time.monotonic()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.directory.close()
        self.mm.close()


def one_round(url: str, watch: bool, workdir: str) -> dict[str, float]:
    prefix = unique("disc")
    config = write_config(
        os.path.join(workdir, f"{prefix}.conf"),
        url,
        rpc_zmq_host="127.0.0.1",
        rpc_zmq_bind_address="127.0.0.1",
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
    key = addressing.rpc_key(prefix, addressing.DEFAULT_EXCHANGE, topic)
    first = ServerProcess(config, topic, "first")
    transport = oslo_messaging.get_rpc_transport(conf)
    calls = Calls(transport, topic)
    observer = Observer(conf, url, key, f"{prefix}/rpc/" if watch else None)
    truth = Observer(conf, url, key, None, ttl=0.0)  # the matchmaker itself, uncached
    result: dict[str, float] = {}
    try:
        wait_until(lambda: calls.answers and observer.count == 1, timeout=30, what="a server")
        second = ServerProcess(config, topic, "second")
        ready = time.monotonic()
        wait_until(lambda: any(who == "second" for _, who in calls.answers), timeout=30)
        result["start"] = max(0.0, min(t for t, who in calls.answers if who == "second") - ready)
        observer.time_until(2, ready)
        time.sleep(1.0)
        observer.counting.count = 0
        time.sleep(10.0)
        result["idle_lookups"] = observer.counting.count * 6
        stopper = threading.Thread(target=second.stop)
        stopper.start()
        unregistered = truth.when(1)
        result["stop"] = observer.when(1) - unregistered
        stopper.join()
        victim = ServerProcess(config, topic, "victim")
        try:
            observer.time_until(2, time.monotonic())
            time.sleep(1.0)
            os.kill(victim.proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            expired = truth.when(1)
            result["expiry"] = expired - killed
            result["sigkill"] = observer.when(1) - expired
        finally:
            victim.kill()
    finally:
        truth.close()
        observer.close()
        calls.close()
        transport.cleanup()
        first.stop()
    return result


class CountingLookups:
    """A matchmaker that counts the lookups made through it."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.count = 0

    def lookup(self, key: str) -> list[str]:
        self.count += 1
        return self.inner.lookup(key)

    def lookup_with_expiry(self, key: str) -> tuple[list[str], float | None]:
        self.count += 1
        return self.inner.lookup_with_expiry(key)

    def watch(self, prefix, on_change):
        return self.inner.watch(prefix, on_change)


def main() -> None:
    warnings.simplefilter("ignore")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="only the rows whose name contains this")
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
                ("zmq+redis:// (push)", redis.url, True),
                ("zmq+etcd:// (poll)", etcd.url, False),
                ("zmq+etcd:// (push)", etcd.url, True),
            ]
            print("| matchmaker | start -> first request | unregistered -> client stops | "
                  "SIGKILL -> record expires | expired -> client stops | "
                  "lookups/min per busy key |")  # fmt: skip
            print("|---|---|---|---|---|---|")
            for name, url, watch in [kind for kind in kinds if args.only in kind[0]]:
                rounds = [one_round(url, watch, workdir) for _ in range(args.rounds)]
                med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
                print(
                    f"| {name} | {med['start'] * 1000:.0f} ms | {med['stop'] * 1000:.0f} ms | "
                    f"{med['expiry']:.1f} s | {med['sigkill'] * 1000:.0f} ms | "
                    f"{med['idle_lookups']:.0f} |",
                    flush=True,
                )
        finally:
            redis.stop()
            etcd.stop()


if __name__ == "__main__":
    main()
