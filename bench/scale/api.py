"""The API-like client: ``python -m bench.scale.api --run-dir D --hosts N ...``.

First it calls ``ping`` on every host (each until it answers, a few hosts at a time) and
writes ``up.json`` with the time every host answered since the run began. Then, from
``go.json`` on, for the traffic window: directed calls and casts to random hosts at fixed
rates, and a fanout cast to every host every ``--fanout-every`` seconds. It writes what it
sent (ids, sequence numbers, send times) and what its calls took.
"""

from __future__ import annotations

import argparse
import logging
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import oslo_messaging

from bench.scale import common
from bench.scale.common import Cost, RunDir

PING_TIMEOUT = 5.0  # seconds of one ping; a host that does not answer is pinged again
CALL_TIMEOUT = 30.0


class Api:
    def __init__(self, conf, url: str, hosts: int) -> None:
        self.transport = oslo_messaging.get_rpc_transport(conf, url=url)
        self.client = oslo_messaging.get_rpc_client(
            self.transport, oslo_messaging.Target(topic=common.COMPUTE), timeout=CALL_TIMEOUT
        )
        self.fanout_client = self.client.prepare(fanout=True)
        self.names = [common.host_name(i) for i in range(hosts)]
        self.lock = threading.Lock()
        self.call_latencies: list[float] = []
        self.call_failures: list[str] = []
        self.failed_hosts: list[str] = []  # the target of each failed call
        self.casts: list[str] = []
        self.cast_failures: list[str] = []
        self.fanouts: list[dict] = []

    def ping_all(self, began: float, deadline: float) -> dict:
        """Ping every host until it answers; when each first answered, since ``began``."""
        answered: dict[str, float] = {}

        def ping(name: str) -> None:
            client = self.client.prepare(server=name, timeout=PING_TIMEOUT)
            while time.time() < deadline:
                try:
                    client.call({}, "ping")
                except oslo_messaging.MessagingTimeout:
                    continue
                answered[name] = time.time() - began
                return

        with ThreadPoolExecutor(32, thread_name_prefix="ping") as pool:
            list(pool.map(ping, self.names))
        times = sorted(answered.values())
        return {"answered": len(times), "all": times[-1] if len(times) == len(self.names) else None}

    def call(self, n: int) -> None:
        host = random.choice(self.names)
        started = time.monotonic()
        try:
            self.client.prepare(server=host).call({}, "work", n=n)
        except Exception as exc:  # counted and reported
            with self.lock:
                self.call_failures.append(type(exc).__name__)
                self.failed_hosts.append(host)
            return
        with self.lock:
            self.call_latencies.append(time.monotonic() - started)

    def cast(self) -> None:
        host = random.choice(self.names)
        # Target and send time in the id: faults count casts per host and per phase.
        cast_id = f"{host}:{time.time():.3f}:{uuid.uuid4().hex[:12]}"
        try:
            self.client.prepare(server=host).cast({}, "cast_work", cast_id=cast_id)
        except Exception as exc:  # counted and reported
            with self.lock:
                self.cast_failures.append(type(exc).__name__)
            return
        with self.lock:
            self.casts.append(cast_id)

    def fanout(self, seq: int) -> None:
        sent = time.time()
        self.fanout_client.cast({}, "fanout", seq=seq, sent=sent)
        with self.lock:
            self.fanouts.append({"seq": seq, "sent": sent, "returned": time.time() - sent})


def paced(every: float, start: float, end: float, work, pool: ThreadPoolExecutor | None) -> None:
    """Run ``work(k)`` at ``start + k * every`` until ``end`` (in ``pool`` if given)."""
    k = 0
    while True:
        at = start + k * every
        if at >= end:
            return
        pause = at - time.time()
        if pause > 0:
            time.sleep(pause)
        if pool is None:
            work(k)
        else:
            pool.submit(work, k)
        k += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--hosts", type=int, required=True)
    parser.add_argument("--began", type=float, required=True, help="time.time() of the run start")
    parser.add_argument("--up-timeout", type=float, default=600.0)
    parser.add_argument("--calls-per-s", type=float, default=25.0)
    parser.add_argument("--casts-per-s", type=float, default=25.0)
    parser.add_argument("--fanout-every", type=float, default=1.0)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument(
        "--log-sends", action="store_true", help="log every cast copy lost to a server (sends.py)"
    )
    args = parser.parse_args()
    common.setup_process()
    if args.log_sends:
        logging.getLogger("zmqdriver.rpc.casts").setLevel(logging.DEBUG)
    run = RunDir(args.run_dir)
    api = Api(common.load_conf(args.config_file), args.url, args.hosts)
    print("READY api", flush=True)
    run.write("up", api.ping_all(args.began, time.time() + args.up_timeout))
    go = common.wait_for(run, "go", args.parent)
    start, end = go["start"], go["start"] + go["duration"]
    while time.time() < start:
        time.sleep(0.01)
    before = Cost.now()
    workers = []
    # Calls to killed hosts (--fault) hold a worker for their whole timeout: 128 workers keep
    # the rate of calls to live hosts (25/s x 30 s would need 750 for every call to hang).
    with ThreadPoolExecutor(128, thread_name_prefix="call") as calls:
        for every, work, pool in (
            (1.0 / args.calls_per_s, api.call, calls),
            (1.0 / args.casts_per_s, lambda _k: api.cast(), None),
            (args.fanout_every, api.fanout, None),
        ):
            worker = threading.Thread(target=paced, args=(every, start, end, work, pool))
            worker.start()
            workers.append(worker)
        for worker in workers:
            worker.join()
        loaded = Cost.now()
    with api.lock:
        run.write(
            "result-api",
            {
                "before": before.asdict(),
                "loaded": loaded.asdict(),
                "calls": api.call_latencies,
                "call_failures": api.call_failures,
                "call_failed_hosts": api.failed_hosts,
                "casts": api.casts,
                "cast_failures": api.cast_failures,
                "fanouts": api.fanouts,
            },
        )
    while not run.stop_requested():  # casts stay tracked until every host had them
        time.sleep(0.1)
    run.write("final-api", {"cost": Cost.now().asdict()})
    api.transport.cleanup()


if __name__ == "__main__":
    main()
