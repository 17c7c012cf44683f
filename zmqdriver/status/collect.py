"""The I/O of zmqdriver-status: the driver a service would build, asked what it sees.

The driver is built by oslo.messaging from the same config file as the
services (transport URL, matchmaker, key prefix, CURVE keys), so the tool
finds servers exactly as their clients do.
"""

from __future__ import annotations

import time

import oslo_messaging
from oslo_config import cfg

from zmqdriver import options
from zmqdriver.driver import ZmqDriver
from zmqdriver.exceptions import BackendError
from zmqdriver.status import model


class NotAZmqTransport(Exception):
    """The config's transport_url does not use zmqdriver."""


class StatusSource:
    """A driver built from ``conf``, used only to look (it registers nothing)."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self._transport = oslo_messaging.get_rpc_transport(conf)
        driver = self._transport._driver  # oslo builds it; we need its matchmaker and outbox
        if not isinstance(driver, ZmqDriver):
            self._transport.cleanup()
            raise NotAZmqTransport(
                f"transport_url uses {type(driver).__name__}, not zmqdriver (zmq://, zmq+redis://, "
                "zmq+sentinel://)"
            )
        self.driver = driver
        self.prefix = conf[options.GROUP].zmq_matchmaker_prefix

    def targets(self, snapshot: model.Snapshot) -> None:
        try:
            listed = self.driver.matchmaker.records(f"{self.prefix}/rpc/")
        except BackendError as exc:
            snapshot.problems.append(f"cannot list the matchmaker's records: {exc}")
            return
        snapshot.targets = model.build_targets(self.prefix, listed)

    def ping(self, snapshot: model.Snapshot, timeout: float) -> None:
        endpoints = [s.endpoint for t in snapshot.targets for s in t.servers]
        snapshot.pings = self.driver.ping(endpoints, timeout) if endpoints else {}

    def backlogs(self, snapshot: model.Snapshot) -> None:
        try:
            snapshot.backlogs = self.driver.notification_store().backlogs(f"{self.prefix}/notify/")
        except BackendError as exc:
            snapshot.problems.append(f"cannot list notification streams: {exc}")

    def look(self, *, targets: bool = True, ping: float | None = None, backlogs: bool = False):
        """A fresh Snapshot: targets, then PINGs (``ping`` is their timeout), then backlogs."""
        snapshot = model.Snapshot(taken_at=time.time(), prefix=self.prefix)
        if targets or ping is not None:
            self.targets(snapshot)
        if ping is not None:
            self.ping(snapshot, ping)
        if backlogs:
            self.backlogs(snapshot)
        return snapshot

    def close(self) -> None:
        self._transport.cleanup()
