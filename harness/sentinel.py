"""A private Redis Sentinel deployment: a master, replicas, sentinels.

Every process runs on a free loopback port in a temporary directory (the
shared Redis on 6379 is never touched) and is killed by PID at teardown.
Used by the tests (tests/sentinel_fixture.py) and by the scale harness's
failover fault. Startup waits on conditions, never on sleeps: replicas in
sync, then every sentinel seeing the master, its replicas and the other
sentinels (without the latter they could not agree on a failover).
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import redis

from harness.redis_server import START_TIMEOUT, RedisServer, redis_server_binary
from harness.wait import wait_until

if TYPE_CHECKING:
    from harness.redis_server import TlsFiles

SERVICE = "mymaster"
# Fast failure detection so a failover takes seconds; still far above the
# few milliseconds a loopback ping takes, so no false alarms on a busy machine.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
PROMOTION_TIMEOUT = 60.0


class SentinelServer(RedisServer):
    """One sentinel: ``redis-server <its own sentinel.conf> --sentinel``."""

    def __init__(
        self,
        directory: Path,
        config: list[str],
        password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        super().__init__(directory, tls=tls)
        self.config = config
        self.password = password

    @property
    def config_path(self) -> Path:
        return self.directory / "sentinel.conf"

    @property
    def log_path(self) -> Path:
        return self.directory / f"sentinel-{self.port}.log"

    def start(self) -> None:
        """Start the sentinel (again, with the state it saved) and wait until it answers."""
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        # Sentinels rewrite their file (peers, epochs, the current master);
        # write it once, so a restart resumes from what this sentinel learnt.
        if not self.config_path.exists():
            lines = [
                *self._listen_lines(),
                f"bind {self.host}",
                f'dir "{self.directory}"',
                f'logfile "{self.log_path}"',
                "daemonize no",
                *self.config,
            ]
            self.config_path.write_text("\n".join(lines) + "\n")
        command = [redis_server_binary(), str(self.config_path), "--sentinel"]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        self.wait_ready(f"sentinel on port {self.port}")

    def client(self, **kwargs) -> redis.Redis:
        kwargs.setdefault("password", self.password)
        return super().client(**kwargs)

    def _listen_lines(self) -> list[str]:
        """sentinel.conf lines of the port: plain, or TLS only (also to the data nodes)."""
        if not self.tls:
            return [f"port {self.port}"]
        args = self.tls.redis_args(self.port)
        pairs = [f"{name.lstrip('-')} {value}" for name, value in zip(args[::2], args[1::2])]
        return [*pairs, "tls-replication yes"]


class SentinelCluster:
    """A master, ``replicas`` replicas and ``sentinels`` sentinels watching ``service``.

    ``password`` protects the master and replicas (``requirepass``, with
    ``masterauth``/``sentinel auth-pass`` so replication and monitoring
    work); ``sentinel_password`` protects the sentinels themselves. With
    ``tls`` every process serves TLS only and requires client certificates,
    and replicas and sentinels use TLS among themselves.
    """

    def __init__(
        self,
        directory: Path,
        service: str = SERVICE,
        replicas: int = 1,
        sentinels: int = 3,
        quorum: int = 2,
        password: str | None = None,
        sentinel_password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.directory = directory
        self.service = service
        self.password = password
        self.sentinel_password = sentinel_password
        auth = ("--requirepass", password, "--masterauth", password) if password else ()
        # Redis delays a full sync by 5 s by default, hoping for more replicas to share it.
        args = ("--repl-diskless-sync-delay", "0", *auth)
        if tls:
            args += ("--tls-replication", "yes")
        self.master = RedisServer(directory / "master", args, tls)
        # Every data node, by port: after a failover any of them may be the master.
        self.servers: dict[int, RedisServer] = {self.master.port: self.master}
        self.replicas: list[RedisServer] = []
        for index in range(replicas):
            replica_args = ("--replicaof", self.master.host, str(self.master.port), *args)
            replica = RedisServer(directory / f"replica{index}", replica_args, tls)
            self.replicas.append(replica)
            self.servers[replica.port] = replica
        config = [
            f"sentinel monitor {service} {self.master.host} {self.master.port} {quorum}",
            f"sentinel down-after-milliseconds {service} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {service} {FAILOVER_TIMEOUT_MS}",
        ]
        if password:
            config.append(f"sentinel auth-pass {service} {password}")
        if sentinel_password:
            # Sentinels authenticate to each other with sentinel-pass.
            config += [
                f"requirepass {sentinel_password}",
                f"sentinel sentinel-pass {sentinel_password}",
            ]
        self.sentinels = [
            SentinelServer(directory / f"sentinel{index}", config, sentinel_password, tls)
            for index in range(sentinels)
        ]
        self.killed: list[RedisServer] = []

    @property
    def url(self) -> str:
        """``zmq+sentinel://...`` for this cluster, with whatever credentials it needs."""
        hosts = ",".join(f"{s.host}:{s.port}" for s in self.sentinels)
        if self.password:
            hosts = f":{quote(self.password, safe='')}@{hosts}"
        query = ""
        if self.sentinel_password:
            query = f"?sentinel_password={quote(self.sentinel_password, safe='')}"
        return f"zmq+sentinel://{hosts}/{self.service}{query}"

    def start(self) -> None:
        """Start everything and wait until the sentinels could fail the master over."""
        self.master.start()
        for replica in self.replicas:
            replica.start()
        # Sentinels learn replicas from the master's INFO, read on connecting
        # and then only every 10 s: let the replicas attach first.
        wait_until(self._replicas_in_sync, START_TIMEOUT, "the replicas to sync with the master")
        for sentinel in self.sentinels:
            sentinel.start()
        wait_until(self._sentinels_ready, START_TIMEOUT, "the sentinels to see the whole cluster")

    def stop(self) -> None:
        """Kill every process this cluster started, by PID."""
        for server in [*self.sentinels, *self.servers.values()]:
            server.stop()

    def master_address(self) -> tuple[str, int] | None:
        """The master's address according to the first sentinel that answers."""
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            try:
                with sentinel.client(decode_responses=True) as client:
                    address = client.sentinel_get_master_addr_by_name(self.service)
            except redis.RedisError:
                continue
            if address:
                return address[0], int(address[1])
        return None

    def current_master(self) -> RedisServer:
        """The data node the sentinels call master right now."""
        address = self.master_address()
        assert address is not None, "no sentinel answers"
        return self.servers[address[1]]

    def kill_master(self) -> RedisServer:
        """SIGKILL the current master (remembered in ``killed``) and return it."""
        master = self.current_master()
        master.stop(signal.SIGKILL)
        self.killed.append(master)
        return master

    def wait_for_promotion(self, timeout: float = PROMOTION_TIMEOUT) -> RedisServer:
        """Wait until every sentinel names one live, promoted master; return it."""
        promoted: list[RedisServer] = []

        def done() -> bool:
            addresses = set()
            for sentinel in self.sentinels:
                try:
                    with sentinel.client(decode_responses=True) as client:
                        address = client.sentinel_get_master_addr_by_name(self.service)
                except redis.RedisError:
                    return False
                addresses.add((address[0], int(address[1])) if address else None)
            if len(addresses) != 1 or None in addresses:
                return False
            server = self.servers.get(addresses.pop()[1])
            if server is None or server in self.killed or not server.running:
                return False
            with server.client(password=self.password, decode_responses=True) as client:
                if client.info("replication")["role"] != "master":
                    return False
            promoted[:] = [server]
            return True

        wait_until(done, timeout, f"the sentinels to promote a new master ({self._logs()})")
        return promoted[0]

    def _replicas_in_sync(self) -> bool:
        for replica in self.replicas:
            with replica.client(password=self.password, decode_responses=True) as client:
                if client.info("replication").get("master_link_status") != "up":
                    return False
        return True

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            try:
                with sentinel.client(decode_responses=True) as client:
                    state = client.sentinel_master(self.service)
                    replicas = client.sentinel_slaves(self.service)
            except redis.RedisError:
                return False
            if not state["is_master"] or state["is_sdown"] or state["is_odown"]:
                return False
            if sum(1 for r in replicas if not r["is_sdown"]) != len(self.replicas):
                return False
            # Peers are found through hello messages every 2 s; a failover
            # needs the quorum and a majority of them.
            if state["num-other-sentinels"] != len(self.sentinels) - 1:
                return False
        return True

    def _logs(self) -> str:
        return " | ".join(s._log()[-600:] for s in self.sentinels)
