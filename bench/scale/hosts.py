"""One OS process of many hosts: ``python -m bench.scale.hosts --run-dir D --first I --count N``.

Each host has its own config (its loopback address as ``rpc_zmq_host`` and bind address),
its own RPC and notification transports, an RPC server on topic ``compute`` with
``server=<host>`` (so fanout on ``compute`` reaches it too), and calls ``conductor`` and
sends a notification every 10 s once traffic starts. It counts what it receives: fanout
copies per sequence number (with the delay since the API sent it), casts per id.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import oslo_messaging

from bench.scale import common
from bench.scale.common import Cost, RunDir


class Tally:
    """What the hosts of this process received, under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fanout: dict[int, list] = {}  # seq -> [copies, distinct hosts, delays]
        self.casts: dict[str, int] = {}  # cast id -> times run
        # host -> [time.time(), seq] of its first fanout copy: when a restarted host was
        # back in the fanout, and from which fanout on it must have every one
        self.first: dict[str, list] = {}
        self.calls = 0  # directed calls answered

    def got_fanout(self, host: str, seq: int, sent: float) -> None:
        delay = time.time() - sent
        with self.lock:
            entry = self.fanout.setdefault(seq, [0, set(), []])
            entry[0] += 1
            if host not in entry[1]:
                entry[1].add(host)
                entry[2].append(round(delay, 4))
            first = self.first.setdefault(host, [time.time(), seq])
            first[1] = min(first[1], seq)  # copies of earlier fanouts may arrive later

    def got_cast(self, cast_id: str) -> None:
        with self.lock:
            self.casts[cast_id] = self.casts.get(cast_id, 0) + 1

    def progress(self) -> dict:
        with self.lock:
            return {
                "fanout": sum(entry[0] for entry in self.fanout.values()),
                "casts": sum(self.casts.values()),
            }

    def result(self) -> dict:
        with self.lock:
            return {
                "fanout": {
                    str(seq): {"copies": e[0], "hosts": len(e[1]), "delays": e[2]}
                    for seq, e in self.fanout.items()
                },
                "casts": dict(self.casts),
                "calls": self.calls,
                "first": dict(self.first),
            }


class ComputeEndpoint:
    """What a host serves on topic ``compute``."""

    def __init__(self, host: str, tally: Tally) -> None:
        self.host = host
        self.tally = tally

    def ping(self, ctxt: dict) -> str:
        return self.host

    def work(self, ctxt: dict, n: int) -> int:
        with self.tally.lock:
            self.tally.calls += 1
        return n

    def cast_work(self, ctxt: dict, cast_id: str) -> None:
        self.tally.got_cast(cast_id)

    def fanout(self, ctxt: dict, seq: int, sent: float) -> None:
        self.tally.got_fanout(self.host, seq, sent)


class Host:
    """One host: its transports, its compute server, its conductor client and notifier."""

    def __init__(self, run: RunDir, url: str, common_conf: str, index: int, tally: Tally):
        self.name = common.host_name(index)
        address = common.host_address(index)
        own = run.config(url, f"host-{index}", rpc_zmq_host=address, rpc_zmq_bind_address=address)
        conf = common.load_conf(common_conf, own)
        self.transport = oslo_messaging.get_rpc_transport(conf, url=url)
        self.server = oslo_messaging.get_rpc_server(
            self.transport,
            oslo_messaging.Target(topic=common.COMPUTE, server=self.name),
            [ComputeEndpoint(self.name, tally)],
            executor="threading",
        )
        self.conductor = oslo_messaging.get_rpc_client(
            self.transport, oslo_messaging.Target(topic=common.CONDUCTOR), timeout=30
        )
        self.notifier = oslo_messaging.Notifier(
            oslo_messaging.get_notification_transport(conf, url=url),
            publisher_id=self.name,
            driver="messaging",
            topics=[common.NOTIFY_TOPIC],
        )
        self.offset = random.uniform(0, common.REPORT_EVERY)  # spread the periodic reports

    def report(self, latencies: list[float], failures: list[str]) -> None:
        """The periodic report: a call to conductor, then a notification."""
        started = time.monotonic()
        try:
            self.conductor.call({}, "report", host=self.name)
        except Exception as exc:  # counted and reported, the run goes on
            failures.append(type(exc).__name__)
        else:
            latencies.append(time.monotonic() - started)
        self.notifier.info({}, "scale.report", {"host": self.name})

    def stop(self) -> None:
        self.server.stop()
        self.server.wait()
        self.transport.cleanup()


def periodic(hosts: list[Host], go: dict, run: RunDir, out: dict) -> None:
    """Every host's report every 10 s, on a few threads, until the traffic window ends."""
    latencies: list[float] = out.setdefault("conductor", [])
    failures: list[str] = out.setdefault("conductor_failures", [])
    sent = 0
    end = go["start"] + go["duration"]
    due = sorted((go["start"] + host.offset, i) for i, host in enumerate(hosts))
    with ThreadPoolExecutor(8, thread_name_prefix="report") as pool:
        while due and not run.stop_requested():
            at, i = due[0]
            if at >= end:
                break
            pause = at - time.time()
            if pause > 0:
                time.sleep(min(pause, 0.5))
                continue
            due.pop(0)
            if at > time.time() - common.REPORT_EVERY:  # a restarted process skips missed ones
                pool.submit(hosts[i].report, latencies, failures)
                sent += 1
            due.append((at + common.REPORT_EVERY, i))
            due.sort()
    out["notifications_sent"] = sent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args()
    common.setup_process()
    run = RunDir(args.run_dir)
    baseline = Cost.now()
    tally = Tally()
    hosts = []
    for index in range(args.first, args.first + args.count):
        host = Host(run, args.url, args.config_file, index, tally)
        host.server.start()
        hosts.append(host)
    up = Cost.now()
    print(f"READY {args.name}", flush=True)
    out: dict = {"hosts": len(hosts), "baseline": baseline.asdict(), "up": up.asdict()}
    go = common.wait_for(run, "go", args.parent)
    reporter = threading.Thread(target=periodic, args=(hosts, go, run, out), daemon=True)
    reporter.start()
    end = go["start"] + go["duration"]
    while not run.stop_requested():
        run.write(f"progress-{args.name}", tally.progress())
        if "start" not in out and time.time() >= go["start"]:
            out["start"] = Cost.now().asdict()
        if "loaded" not in out and time.time() >= end:
            out["loaded"] = Cost.now().asdict()  # at the end of the traffic window
        time.sleep(0.5)
    reporter.join(30)
    out.update(tally.result())
    out.setdefault("loaded", Cost.now().asdict())
    run.write(f"result-{args.name}", out)
    for host in hosts:
        host.stop()


if __name__ == "__main__":
    main()
