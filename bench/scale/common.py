"""What every process of a scale run shares: the run directory, host names, process costs."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import oslo_messaging  # noqa: F401 - registers its options on cfg.CONF
from oslo_config import cfg

from bench.measure import percentile
from harness.config import write_config

COMPUTE = "compute"  # the hosts' topic (nova-compute's)
CONDUCTOR = "conductor"  # the controllers' topic
NOTIFY_TOPIC = "scale_notifications"
POOL = "scale"  # the one notification listener pool
REPORT_EVERY = 10.0  # seconds between a host's calls to conductor (and notifications)
_PR_SET_PDEATHSIG = 1


def host_name(index: int) -> str:
    return f"host-{index:05d}"


def host_address(index: int) -> str:
    """Host ``index``'s own loopback address: 127.1.0.1, ..., 127.1.0.250, 127.1.1.1, ...

    >>> host_address(0), host_address(249), host_address(250)
    ('127.1.0.1', '127.1.0.250', '127.1.1.1')
    """
    return f"127.1.{index // 250}.{index % 250 + 1}"


class RunDir:
    """The directory the processes of one run meet in.

    ``go.json`` (the run controller: when traffic starts and for how long), ``up.json``
    (the API: every host answers), ``stop`` (the run controller: write results and exit),
    ``progress-<name>.json`` and ``result-<name>.json`` (each process).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, name: str, data: object) -> None:
        """Write ``<name>.json`` whole or not at all (readers poll for it)."""
        tmp = self.path / f".{name}.json.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path / f"{name}.json")

    def read(self, name: str) -> dict | None:
        try:
            return json.loads((self.path / f"{name}.json").read_text())
        except FileNotFoundError:
            return None

    def stop_requested(self) -> bool:
        return (self.path / "stop").exists()

    def request_stop(self) -> None:
        (self.path / "stop").touch()

    def config(self, url: str, name: str, **zmq_options: object) -> str:
        """A config file of this run: ``transport_url`` and [oslo_messaging_zmq] lines."""
        return write_config(str(self.path / f"{name}.conf"), url, **zmq_options)


def load_conf(*config_files: str) -> cfg.ConfigOpts:
    """A ConfigOpts of its own (one per host: each has its own rpc_zmq_host)."""
    conf = cfg.ConfigOpts()
    # This oslo.messaging registers some groups (oslo_messaging_tracing, _metrics) on
    # cfg.CONF only, at import, and reads them from whatever conf a client was given.
    for name, group in cfg.CONF._groups.items():
        conf.register_opts([entry["opt"] for entry in group._opts.values()], name)
    args: list[str] = []
    for path in config_files:
        args += ["--config-file", path]
    conf(args, project="zmqdriver-scale", default_config_files=[])
    return conf


def setup_process() -> None:
    """What every child process of a run does first.

    The kernel kills it if the run controller dies (no orphans); SIGTERM ends it at once
    (a run ends through the ``stop`` file, after each process wrote its results); warnings
    go to stderr, which the run controller keeps in ``<name>.log`` and counts.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("amqp").setLevel(logging.ERROR)  # frames racing a closing channel: noise


def wait_for(run: RunDir, name: str, parent: int, poll: float = 0.05) -> dict:
    """Block until ``<name>.json`` exists; exit if the run controller is gone or says stop."""
    while True:
        found = run.read(name)
        if found is not None:
            return found
        if os.getppid() != parent or run.stop_requested():
            raise SystemExit(1)
        time.sleep(poll)


@dataclass
class Cost:
    """What a process holds at one moment; cpu is seconds of CPU used since it started."""

    rss_mib: float
    threads: int
    fds: int
    tcp: int  # established TCP connections
    cpu: float

    @classmethod
    def now(cls, pid: int | None = None) -> Cost:
        proc = f"/proc/{pid or 'self'}"
        status = dict(
            line.split(":", 1) for line in Path(f"{proc}/status").read_text().splitlines()
        )
        fields = Path(f"{proc}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        inodes = _socket_inodes(proc)
        return cls(
            rss_mib=int(status["VmRSS"].split()[0]) / 1024,
            threads=int(status["Threads"]),
            fds=len(os.listdir(f"{proc}/fd")),
            tcp=sum(1 for inode in _established_inodes(proc) if inode in inodes),
            cpu=(int(fields[11]) + int(fields[12])) / ticks,
        )

    def asdict(self) -> dict:
        return asdict(self)


def _socket_inodes(proc: str) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"{proc}/fd"):
        try:
            link = os.readlink(f"{proc}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def _established_inodes(proc: str) -> list[str]:
    found = []
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"{proc}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "01":  # ESTABLISHED
                found.append(parts[9])
    return found


def percentiles(samples: list[float]) -> dict[str, float | None]:
    """p50, p99 and max of ``samples`` (None for each when there are none)."""
    if not samples:
        return {"p50": None, "p99": None, "max": None}
    return {"p50": percentile(samples, 50), "p99": percentile(samples, 99), "max": max(samples)}
