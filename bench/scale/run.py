"""The run controller of ``python -m bench.scale`` (see the package docstring).

    python -m bench.scale --hosts 300 --url zmq+redis:// --url rabbit://guest:guest@127.0.0.1:5672/
    python -m bench.scale --table a.json b.json      # one table from saved runs

For ``zmq+redis://`` it starts a private redis-server (harness.redis_server) and ignores the
URL's host and port. Every process it starts is stopped by PID when the run ends or fails,
and dies with it (``common.die_with_parent``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from bench.procs import Child, ProcessError, RabbitMQ, delete_rabbit_queues, stop_all
from bench.rabbit_node import RabbitNode
from bench.report import machine_facts
from bench.scale import common, fault_report, faults, report, sends
from bench.scale.common import RunDir
from bench.scale.placement import HostProcesses
from bench.scale.registrations import RegistrationWatch
from harness.net import LOOPBACK
from harness.redis_server import RedisServer
from harness.sentinel import SentinelCluster
from harness.wait import eventually

CONTROLLERS = 3
READY_TIMEOUT = 600.0
RESULT_TIMEOUT = 120.0
LOG_PATTERNS = ("did not run for", "Too many open files", "WARNING", "ERROR", "Traceback")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--url", action="append", help="a transport URL, one column each")
    parser.add_argument("--per-process", type=int, default=50, help="hosts per OS process")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    parser.add_argument("--calls-per-s", type=float, default=25.0)
    parser.add_argument("--casts-per-s", type=float, default=25.0)
    parser.add_argument("--fanout-every", type=float, default=1.0)
    parser.add_argument(
        "--executor-threads", type=int, default=0, metavar="N",
        help="executor_thread_pool_size of every process (oslo's default, 64, when 0)",
    )  # fmt: skip
    parser.add_argument("--drain", type=float, default=180.0, help="cap on waiting for stragglers")
    parser.add_argument(
        "--zmq-option", action="append", default=[], metavar="NAME=VALUE",
        help="an [oslo_messaging_zmq] line for every process",
    )  # fmt: skip
    parser.add_argument(
        "--profile", type=float, default=0, metavar="SECONDS",
        help="py-spy the API, one hosts process and one controller from the traffic start "
        "(collapsed stacks in <name>.spy of the run directory; use with --keep)",
    )  # fmt: skip
    parser.add_argument(
        "--own-rabbit", action="store_true",
        help="rabbit://: start a private RabbitMQ node (raised fd limit, free ports) and use "
        "it instead of the URL's broker",
    )  # fmt: skip
    parser.add_argument("--fault", choices=faults.FAULTS, help="inject a fault (faults.py)")
    parser.add_argument("--fault-at", type=float, default=10.0, help="seconds into the traffic")
    parser.add_argument(
        "--restart-after", type=float, default=70.0,
        help="hosts fault: seconds from the kill to the restart (more than zmq_target_expire, "
        "60 s, so that the time until the API stops sending to them is seen whole)",
    )  # fmt: skip
    parser.add_argument("--keep", metavar="DIR", help="keep each run's directory (logs) under DIR")
    parser.add_argument("--json", metavar="PATH", help="save the runs' numbers")
    parser.add_argument("--table", nargs="+", metavar="JSON", help="print saved runs, run nothing")
    args = parser.parse_args(argv)
    if not args.table and not args.url:
        parser.error("--url is required (or --table)")
    end = args.fault_at + (args.restart_after if args.fault == "hosts" else 0)
    if args.fault and end >= args.duration:
        parser.error(f"--duration must outlast the fault ({end:.0f} s into the traffic)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        print(report.table(report.load_columns(args.table)))
        return 0
    # SIGTERM ends the run like Ctrl-C: the finally blocks stop every child.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    columns = []
    for url in args.url:
        print(f"== {url}: {args.hosts} hosts", flush=True)
        column = run_one(url, args)
        columns.append(column)
        print(report.table([column]), flush=True)
        for note in column["notes"]:
            print(f"note: {note}", flush=True)
    if len(columns) > 1:
        print(report.table(columns))
    if args.json:
        facts = machine_facts(["zmq+redis", "rabbit"])
        with open(args.json, "w") as handle:
            json.dump({"argv": sys.argv, "facts": facts, "runs": columns}, handle, indent=1)
    return 0


def run_one(url: str, args: argparse.Namespace) -> dict:
    scheme = urlsplit(url).scheme
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        run = RunDir(tmp)
        try:
            return Deployment(run, url, scheme, args).measure()
        finally:
            if args.keep:
                kept = Path(args.keep) / f"{scheme}-{args.hosts}-{time.strftime('%H%M%S')}"
                ignore = shutil.ignore_patterns("*.conf", "redis", "mnesia")
                shutil.copytree(tmp, kept, ignore=ignore)
                print(f"run directory kept in {kept}", flush=True)


class Deployment:
    """One run: its processes, its Redis (zmq+redis://), its numbers."""

    def __init__(self, run: RunDir, url: str, scheme: str, args: argparse.Namespace) -> None:
        self.run, self.url, self.scheme, self.args = run, url, scheme, args
        self.children: list[Child] = []
        self.redis: RedisServer | None = None
        self.rabbit: RabbitNode | None = None
        self.sentinels: SentinelCluster | None = None
        self.notes: list[str] = []
        self.hosts: HostProcesses | None = None  # once the URL is known
        self.fault: faults.FaultThread | None = None

    def measure(self) -> dict:
        try:
            return self._measure()
        finally:
            stop_all(self.children)
            if self.redis is not None:
                self.redis.stop()
            if self.sentinels is not None:
                self.sentinels.stop()
            if self.rabbit is not None:
                self.rabbit.stop()
            elif self.scheme == "rabbit":
                self._delete_queues()

    def _measure(self) -> dict:
        args, run = self.args, self.run
        if self.scheme == "zmq+redis":
            self.redis = RedisServer(run.path / "redis", extra_args=("--maxclients", "60000"))
            self.redis.start()
            self.url = self.redis.url
        elif self.scheme == "zmq+sentinel":
            self.sentinels = SentinelCluster(run.path / "sentinel")
            self.sentinels.start()
            self.url = self.sentinels.url
        elif self.scheme == "rabbit" and args.own_rabbit:
            self.rabbit = RabbitNode(run.path / "rabbit")
            self.rabbit.start()
            self.url = self.rabbit.url
            self.notes.append(f"private RabbitMQ node, open files limit {self.rabbit.fd_limit()}")
        elif self.scheme == "rabbit":
            why = RabbitMQ(self.url).ensure()
            if why:
                raise SystemExit(f"rabbit column unavailable: {why}")
        # Controllers and the API bind loopback too; each host overrides both with its own.
        options = {"rpc_zmq_bind_address": LOOPBACK, "rpc_zmq_host": LOOPBACK}
        options.update(option.split("=", 1) for option in args.zmq_option)
        config = run.config(self.url, "common", **options)
        if args.executor_threads:
            with open(config, "a") as handle:
                handle.write(f"\n[DEFAULT]\nexecutor_thread_pool_size = {args.executor_threads}\n")
        began = time.time()
        self._start(config, began)
        ready = time.time() - began
        up = self._wait_file("up", READY_TIMEOUT)
        if up["all"] is None:
            self.notes.append(f"only {up['answered']} of {args.hosts} hosts answered a ping")
        start = time.time() + 2.0
        run.write("go", {"start": start, "duration": args.duration})
        redis_before = self._redis_sample(at=start)
        broker_before = self._broker_cost()
        fault = faults.FaultThread(self._fault_work(), start) if args.fault else None
        self.fault = fault
        profilers = self._profile() if args.profile else []
        redis_after = self._redis_sample(at=start + args.duration)
        broker_after = self._broker_cost()
        api = self._wait_file("result-api", args.duration + 120)
        fault_out = self._fault_result(fault, api) if fault else None
        self._drain(api)
        for profiler in profilers:
            try:
                profiler.wait(max(0.0, start + args.duration + 30 - time.time()))
            except subprocess.TimeoutExpired:
                profiler.kill()  # ours, by PID; its samples so far are lost
                profiler.wait()
                self.notes.append(f"py-spy on pid {profiler.args[-1]} did not finish: killed")
        run.request_stop()
        results = {
            c.name: {**self._wait_file(f"result-{c.name}", RESULT_TIMEOUT), "name": c.name}
            for c in self.children
            if c.name not in self.hosts.killed
        }
        stop_all(self.children)
        hosts = [r for name, r in results.items() if name.startswith("hosts-")]
        values = report.summarize(
            hosts=args.hosts,
            processes=len(hosts),
            up=up,
            api=api,
            host_results=hosts,
            controllers=[r for name, r in results.items() if name.startswith("ctl-")],
            # Counters restart with Redis, and a failover moves them to another server.
            redis=None if args.fault else _redis_delta(redis_before, redis_after),
            broker=(broker_before, broker_after) if broker_before and broker_after else None,
            duration=args.duration,
            logs=self._log_counts(),
            load=os.getloadavg()[0],
        )
        values["ready_s"] = ready
        if fault_out is not None:
            victims = self.hosts.victim_host_names()
            values.update(fault_report.summarize(fault_out, api, hosts, victims))
        return {
            "url": f"{self.scheme}://",
            "values": values,
            "notes": self.notes,
            "args": vars(args),
            "fault": fault_out,
        }

    def _start(self, config: str, began: float) -> None:
        args = self.args
        parent = ["--parent", str(os.getpid()), "--run-dir", str(self.run.path), "--url", self.url]
        parent += ["--config-file", config]
        specs = [
            ("bench.scale.controller", [*parent, "--name", f"ctl-{k}"], f"ctl-{k}")
            for k in range(CONTROLLERS)
        ]
        self.hosts = HostProcesses(
            run_dir=self.run.path,
            url=self.url,
            config=config,
            hosts=args.hosts,
            per_process=args.per_process,
            victims=faults.victim_count(args.hosts) if args.fault == "hosts" else 0,
            children=self.children,
            rabbit=self.rabbit,
        )
        specs += self.hosts.specs()
        api_args = [*parent, "--hosts", str(args.hosts), "--began", str(began)]
        if args.fault == "hosts" and self.scheme.startswith("zmq"):
            api_args.append("--log-sends")
        api_args += ["--calls-per-s", str(args.calls_per_s), "--casts-per-s", str(args.casts_per_s)]
        api_args += ["--fanout-every", str(args.fanout_every)]
        specs.append(("bench.scale.api", api_args, "api"))
        for module, child_args, name in specs:
            with open(self.run.path / f"{name}.log", "w") as log:
                self.children.append(Child(module, *child_args, name=name, stderr=log))
        deadline = time.monotonic() + READY_TIMEOUT
        for child in self.children:
            child.expect("READY", max(0.0, deadline - time.monotonic()))
        print("  pids: " + " ".join(f"{c.name}={c.pid}" for c in self.children), flush=True)

    def _fault_work(self) -> Callable[[float], dict]:
        args = self.args
        watch = RegistrationWatch(common.COMPUTE, args.hosts)
        if args.fault == "hosts":
            return faults.kill_and_restart(self.hosts, args.fault_at, args.restart_after)
        if args.fault == "redis-restart" and self.redis is not None:
            return faults.restart_redis(self.redis, watch, args.fault_at)
        if args.fault == "sentinel-failover" and self.sentinels is not None:
            return faults.fail_over(self.sentinels, watch, args.fault_at)
        raise SystemExit(f"--fault {args.fault} does not apply to {self.scheme}://")

    def _fault_result(self, fault: faults.FaultThread, api: dict) -> dict:
        out = {"name": self.args.fault, **fault.result(self.args.restart_after + 300)}
        if self.args.fault == "hosts" and self.scheme.startswith("zmq"):
            log = self.run.path / "api.log"
            addresses = self.hosts.victim_addresses()
            out["sends"] = sends.sends_to(log, addresses, out["kill"], out["restart"])
        return out

    def _wait_file(self, name: str, timeout: float) -> dict:
        def found():
            for child in self.children:
                if self.hosts is not None and child.name in self.hosts.killed:
                    continue
                if child.process.poll() is not None and child.process.returncode != 0:
                    raise ProcessError(f"{child.name} exited with {child.process.returncode}")
            return self.run.read(name)

        result = eventually(found, timeout, poll=0.1)
        if result is None:
            raise ProcessError(f"no {name}.json within {timeout:.0f} s")
        return result

    def _drain(self, api: dict) -> None:
        """Wait until every host has every fanout copy and every cast, or --drain passes."""
        victims = self.hosts.victim_host_names()
        casts = [c for c in api["casts"] if c.split(":")[0] not in victims]
        want = (len(api["fanouts"]) * (self.args.hosts - len(victims)), len(casts))
        started = time.monotonic()
        # Survivors only: the victims' processes are dead or restarted (fault_report counts them).
        survivors = self.hosts.survivors()

        def delivered() -> bool:
            got = [self.run.read(f"progress-{c.name}") or {} for c in survivors]
            return (
                sum(g.get("fanout", 0) for g in got) >= want[0]
                and sum(g.get("casts", 0) for g in got) >= want[1]
            )

        if not eventually(delivered, self.args.drain, poll=0.5):
            self.notes.append(f"not all delivered {self.args.drain:.0f} s after the traffic")
        else:
            self.notes.append(f"all delivered {time.monotonic() - started:.1f} s after the API")

    def _broker_cost(self) -> dict | None:
        """The matchmaker's or broker's process costs, when this run started it."""
        pid = self.redis.pid if self.redis else self.rabbit.vm_pid if self.rabbit else None
        return common.Cost.now(pid).asdict() if pid else None

    def _redis_sample(self, at: float) -> dict | None:
        while time.time() < at:
            time.sleep(min(0.2, at - time.time()))
        if self.redis is None:
            return None
        info = self.redis.client().info()
        stats = self.redis.client().info("commandstats")
        return {
            "t": time.time(),
            "commands": info["total_commands_processed"],
            "cpu": info["used_cpu_sys"] + info["used_cpu_user"],
            "by_command": {name[8:]: stat["calls"] for name, stat in stats.items()},
        }

    def _profile(self) -> list[subprocess.Popen]:
        """py-spy (pip install py-spy) on the API, the first hosts process and ctl-0."""
        if shutil.which("py-spy") is None:
            self.notes.append("--profile: py-spy is not installed")
            return []
        profilers = []
        for child in self.children:
            if child.name in ("api", "hosts-0", "ctl-0"):
                out = self.run.path / f"{child.name}.spy"
                command = ["py-spy", "record", "--nonblocking", "-r", "10"]
                command += ["-d", str(int(self.args.profile)), "-f", "raw", "-o", str(out)]
                command += ["-p", str(child.pid)]
                profilers.append(
                    subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                )
        return profilers

    def _log_counts(self) -> Counter:
        counts: Counter = Counter()
        for log in self.run.path.glob("*.log"):
            for line in log.read_text(errors="replace").splitlines():
                counts.update(p for p in LOG_PATTERNS if p in line)
        return counts

    def _delete_queues(self) -> None:
        hosts = [common.host_name(i) for i in range(self.args.hosts)]
        names = [common.COMPUTE, common.CONDUCTOR, common.POOL]
        names += [f"{common.COMPUTE}.{h}" for h in hosts]
        names += [f"{common.CONDUCTOR}.ctl-{k}" for k in range(CONTROLLERS)]
        try:
            delete_rabbit_queues(self.url, names)
        except Exception as exc:  # the numbers stand; say what was left behind
            print(f"warning: could not delete the run's RabbitMQ queues: {exc}", flush=True)


def _redis_delta(before: dict | None, after: dict | None) -> dict | None:
    if before is None or after is None:
        return None
    by_command = {
        name: calls - before["by_command"].get(name, 0)
        for name, calls in after["by_command"].items()
    }
    return {
        "seconds": after["t"] - before["t"],
        "commands": after["commands"] - before["commands"],
        "cpu": after["cpu"] - before["cpu"],
        "by_command": {name: n for name, n in by_command.items() if n},
    }


if __name__ == "__main__":
    raise SystemExit(main())
