"""oslo.messaging alone: the best any driver could score on this machine.

    python -m bench.oslo_alone [--quick]

An in-process driver with no transport at all (no sockets, no encoding, no
acknowledgements) stands in for a real one, so what is measured is
oslo.messaging's own work around a driver with the threading executor:

* latency rows: ``RPCClient.call`` in this thread, the RPC server's executor
  thread running the endpoint, the reply handed straight back. Two thread
  hand-offs, which every driver has too; nothing else.
* throughput rows: the server side alone. A feeder thread hands ready-made
  requests (or notifications) to the server as fast as it takes them; the
  rate is how fast oslo's server can dispatch them on one core. In the real
  benchmark the server is its own process with one GIL, so no driver can
  deliver faster than this to one server.

* fanout row: computed, not measured. Its servers are separate processes,
  each at most as fast as one server above, and together they cannot use
  more cores than the machine has: min(servers, cores) x the cast rate, an
  upper bound that even ignores the client's own share of the cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
import time
from collections.abc import Iterator

import oslo_messaging
from oslo_config import cfg
from oslo_messaging import transport as oslo_transport
from oslo_messaging._drivers import base

from bench.measure import FULL, LARGE, QUICK, SMALL, Counts, Result, latency_values

WAIT = 60.0  # seconds: generous bound on any single wait here


class _Request(base.RpcIncomingMessage):
    """A request handed to the server; ``reply()`` completes it."""

    def __init__(self, message: dict, msg_id: str, on_reply) -> None:
        super().__init__({}, message, msg_id)
        self._on_reply = on_reply

    def acknowledge(self) -> None:
        pass

    def requeue(self) -> None:
        pass

    def heartbeat(self) -> None:
        pass

    def reply(self, reply=None, failure=None) -> None:
        self._on_reply(reply, failure)


class _Notification(base.IncomingMessage):
    def acknowledge(self) -> None:
        pass

    def requeue(self) -> None:
        pass


class _Listener(base.Listener):
    """Keeps the server's callback so the driver can hand it messages directly."""

    def __init__(self, driver: InProcessDriver) -> None:
        super().__init__(batch_size=1, batch_timeout=None)
        self._driver = driver

    def start(self, on_incoming_callback) -> None:
        super().start(on_incoming_callback)
        self._driver.listener = self

    def cleanup(self) -> None:
        pass


class InProcessDriver(base.BaseDriver):
    """One listener; ``send`` runs a call through it and waits for the reply."""

    def __init__(self, conf) -> None:
        super().__init__(conf, None)
        self.listener: _Listener | None = None

    def send(self, target, ctxt, message, wait_for_reply=None, timeout=None, **kwargs):
        answered = threading.Event()
        answer: list = []

        def on_reply(reply, failure) -> None:
            answer.append(reply)
            answered.set()

        self.listener.on_incoming_callback([_Request(message, "x", on_reply)])
        if not answered.wait(WAIT):
            raise oslo_messaging.MessagingTimeout("the in-process server did not reply")
        return answer[0]

    def send_notification(self, target, ctxt, message, version, retry=None):
        self.listener.on_incoming_callback([_Notification(ctxt, message)])

    def listen(self, target, batch_size, batch_timeout):
        return _Listener(self)

    def listen_for_notifications(self, targets_and_priorities, pool, batch_size, batch_timeout):
        return _Listener(self)

    def cleanup(self) -> None:
        pass


class _Echo:
    def __init__(self, wanted: int) -> None:
        self.count = 0
        self.wanted = wanted
        self.all_arrived = threading.Event()
        self._lock = threading.Lock()

    def echo(self, ctxt: dict, payload: str) -> str:
        return payload

    def sink(self, ctxt: dict, payload: str) -> None:
        self._arrived()

    def info(self, ctxt, publisher_id, event_type, payload, metadata) -> None:
        self._arrived()

    def _arrived(self) -> None:
        # Executor threads run this at once: an unlocked += could lose a count
        # and leave all_arrived unset.
        with self._lock:
            self.count += 1
            if self.count >= self.wanted:
                self.all_arrived.set()


def _rpc_server(driver: InProcessDriver, endpoint: _Echo):
    transport = oslo_transport.RPCTransport(driver)
    target = oslo_messaging.Target(topic="alone", server="one")
    server = oslo_messaging.get_rpc_server(transport, target, [endpoint], executor="threading")
    return transport, server


@contextlib.contextmanager
def _serving(server) -> Iterator[None]:
    """An oslo server (RPC or notification) started for the ``with`` block."""
    server.start()
    try:
        yield
    finally:
        server.stop()
        server.wait()


def _latency(counts: Counts, result: Result) -> None:
    driver = InProcessDriver(cfg.CONF)
    transport, server = _rpc_server(driver, _Echo(0))
    client = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic="alone"))
    with _serving(server):
        for prefix, size in (("lat_small", SMALL), ("lat_large", LARGE)):
            payload = "x" * size
            for _ in range(counts.warmup):
                client.call({}, "echo", payload=payload)
            samples = []
            for _ in range(counts.latency_calls):
                start = time.perf_counter()
                client.call({}, "echo", payload=payload)
                samples.append(time.perf_counter() - start)
            result.values.update(latency_values(prefix, samples))


def _feed_rate(callback, make_message, endpoint: _Echo) -> float:
    """Messages/s the server dispatches when ``callback`` is fed as fast as it takes them."""
    start = time.perf_counter()
    for number in range(endpoint.wanted):
        callback([make_message(number)])
    if not endpoint.all_arrived.wait(WAIT):
        raise RuntimeError(f"only {endpoint.count} of {endpoint.wanted} messages ran")
    return endpoint.wanted / (time.perf_counter() - start)


def _rpc_rate(method: str, wanted: int) -> float:
    endpoint = _Echo(wanted)
    driver = InProcessDriver(cfg.CONF)
    _, server = _rpc_server(driver, endpoint)
    message = {"method": method, "args": {"payload": "x" * SMALL}, "version": "1.0"}
    is_call = method == "echo"  # a call: count the replies instead of the runs

    def on_reply(reply, failure) -> None:
        if is_call:
            endpoint._arrived()

    with _serving(server):
        return _feed_rate(
            driver.listener.on_incoming_callback,
            lambda n: _Request(message, str(n), on_reply),
            endpoint,
        )


def _notify_rate(wanted: int) -> float:
    endpoint = _Echo(wanted)
    driver = InProcessDriver(cfg.CONF)
    transport = oslo_transport.NotificationTransport(driver)
    targets = [oslo_messaging.Target(topic="alone")]
    server = oslo_messaging.get_notification_listener(
        transport, targets, [endpoint], executor="threading"
    )

    def notification(number: int) -> _Notification:
        message = {
            "message_id": str(number),
            "publisher_id": "bench",
            "event_type": "bench.event",
            "priority": "INFO",
            "payload": {"data": "x" * SMALL},
            "timestamp": "2026-01-01 00:00:00",
        }
        return _Notification({}, message)

    with _serving(server):
        return _feed_rate(driver.listener.on_incoming_callback, notification, endpoint)


def run(counts: Counts) -> Result:
    """The oslo-alone column: latency round trips, then the server-side rates."""
    result = Result()
    _latency(counts, result)
    result.values["call_tput"] = _rpc_rate("echo", counts.throughput_calls)
    result.values["cast_tput"] = _rpc_rate("sink", counts.casts)
    cores = min(counts.fanout_servers, os.cpu_count() or 1)
    result.values["fanout_tput"] = cores * result.values["cast_tput"]
    result.values["notify_tput"] = _notify_rate(counts.casts)
    result.notes.append(
        "no transport; throughput rows are the server side alone (one process, one core); "
        f"fanout is computed: {cores} core(s) x the cast rate"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    args = parser.parse_args()
    cfg.CONF([], project="zmqdriver-bench", default_config_files=[])
    result = run(QUICK if args.quick else FULL)
    for key, value in result.values.items():
        print(f"{key}: {value:,.3f}" if key.startswith("lat") else f"{key}: {value:,.0f}/s")


if __name__ == "__main__":
    main()
