"""Which hosts live in which OS process, and the hosts fault's side of them (faults.HostsTarget).

Hosts are packed ``per_process`` to a process; the hosts the ``hosts`` fault kills (the first
``victims``) get processes of their own, so a SIGKILL takes exactly them. A restarted process
serves the same hosts (names, addresses) under the name ``<process>-again``.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.procs import Child
from bench.rabbit_node import RabbitNode
from bench.scale import common

MODULE = "bench.scale.hosts"


class HostProcesses:
    def __init__(
        self,
        *,
        run_dir: Path,
        url: str,
        config: str,
        hosts: int,
        per_process: int,
        victims: int,
        children: list[Child],
        rabbit: RabbitNode | None = None,
    ) -> None:
        """``children``: the run's list of child processes; restarted ones are appended."""
        self.run_dir, self.url, self.config = run_dir, url, config
        self.children = children
        self.rabbit = rabbit
        self.victim_hosts = range(victims)
        self.placement: dict[str, tuple[int, int]] = {}  # process name -> (first, count)
        for low, high in ((0, victims), (victims, hosts)):
            for first in range(low, high, per_process):
                name = f"hosts-{len(self.placement)}"
                self.placement[name] = (first, min(per_process, high - first))
        self.victim_names = [n for n, (first, _) in self.placement.items() if first < victims]
        self.killed: set[str] = set()

    def specs(self) -> list[tuple[str, list[str], str]]:
        """(module, args, name) of every hosts process, for the run controller to start."""
        return [(MODULE, self.args(name), name) for name in self.placement]

    def args(self, name: str, as_name: str | None = None) -> list[str]:
        first, count = self.placement[name]
        return [
            *("--parent", str(os.getpid()), "--run-dir", str(self.run_dir), "--url", self.url),
            *("--config-file", self.config, "--first", str(first), "--count", str(count)),
            *("--name", as_name or name),
        ]

    def survivors(self) -> list[Child]:
        """The hosts processes never killed."""
        return [
            c for c in self.children if c.name in self.placement and c.name not in self.victim_names
        ]

    def victim_host_names(self) -> set[str]:
        return {common.host_name(i) for i in self.victim_hosts}

    def victim_addresses(self) -> set[str]:
        return {common.host_address(i) for i in self.victim_hosts}

    # -- faults.HostsTarget ----------------------------------------------------------------

    def victims(self) -> list[Child]:
        self.killed.update(self.victim_names)  # before the kill: their exit is no error
        return [c for c in self.children if c.name in self.victim_names]

    def restart(self, child: Child) -> Child:
        """A new process for ``child``'s hosts; returns once its servers are started."""
        name = f"{child.name}-again"
        with open(self.run_dir / f"{name}.log", "w") as log:
            again = Child(MODULE, *self.args(child.name, name), name=name, stderr=log)
        self.children.append(again)
        again.expect("READY", 600.0)
        return again

    def orphan_fanout_queues(self) -> tuple[int, int] | None:
        return self.rabbit.orphan_queues(f"{common.COMPUTE}_fanout_") if self.rabbit else None
