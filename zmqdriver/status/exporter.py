"""``zmqdriver-status exporter``: ``/metrics`` for Prometheus and ``/``, a status page.

Every scrape and every page load takes a fresh look: the matchmaker's
records, a PING to each server (whose PONG carries its process's counters)
and the notification store's backlogs. So no service opens a port of its
own, and what Prometheus sees is what ``zmqdriver-status ping`` prints.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from zmqdriver import metrics
from zmqdriver.status import model, render
from zmqdriver.status.collect import StatusSource

LOG = logging.getLogger(__name__)

_SERVER_LABELS = ["exchange", "topic", "server", "address", "hostname"]


def families(snapshot: model.Snapshot) -> Iterator[Metric]:
    """The Prometheus metrics of a snapshot (pure: the tests feed it snapshots)."""
    up = GaugeMetricFamily(
        "zmqdriver_server_up", "1 when the server answered PING", labels=_SERVER_LABELS
    )
    rtt = GaugeMetricFamily(
        "zmqdriver_server_ping_seconds", "PING round-trip time", labels=_SERVER_LABELS
    )
    backlog = GaugeMetricFamily(
        "zmqdriver_server_executor_backlog",
        "requests handed to the server's executor, not yet replied or DONE",
        labels=_SERVER_LABELS,
    )
    live = GaugeMetricFamily(
        "zmqdriver_target_live_servers",
        "servers of a target that answered PING",
        labels=["exchange", "topic"],
    )
    pings = snapshot.pings or {}
    for target in snapshot.targets:
        answering = 0
        for server in target.servers:
            result = pings.get(server.endpoint)
            labels = [
                target.exchange,
                target.topic,
                server.name or "",
                server.endpoint.uri,
                server.info.hostname if server.info else "",
            ]
            alive = result is not None and result.alive
            answering += alive
            up.add_metric(labels, 1.0 if alive else 0.0)
            if alive:
                rtt.add_metric(labels, result.rtt)
                backlog.add_metric(labels, float((result.body or {}).get("backlog", 0)))
        live.add_metric([target.exchange, target.topic], answering)
    yield from (up, rtt, backlog, live)
    yield from _counters(snapshot)
    yield from _notifications(snapshot)


def _counters(snapshot: model.Snapshot) -> Iterator[Metric]:
    processes = model.processes(snapshot)
    for name, help_text in metrics.COUNTERS.items():
        family = CounterMetricFamily(f"zmqdriver_{name}", help_text, labels=["hostname", "pid"])
        for (hostname, pid), counters in sorted(processes.items()):
            if isinstance(counters.get(name), int):
                family.add_metric([hostname, str(pid)], counters[name])
        yield family


def _notifications(snapshot: model.Snapshot) -> Iterator[Metric]:
    labels = ["stream", "pool"]
    waiting = GaugeMetricFamily(
        "zmqdriver_notification_backlog",
        "notifications a pool has not finished (unread, or delivered and not acknowledged)",
        labels=labels,
    )
    oldest = GaugeMetricFamily(
        "zmqdriver_notification_oldest_unread_seconds",
        "age of the oldest notification a pool has not finished",
        labels=labels,
    )
    dropped = CounterMetricFamily(
        "zmqdriver_notification_retention_dropped",
        "unread notifications of a pool dropped by retention",
        labels=labels,
    )
    for item in snapshot.backlogs or []:
        values = [render.stream_name(snapshot.prefix, item.stream), render.pool_name(item.group)]
        waiting.add_metric(values, item.backlog)
        oldest.add_metric(values, item.oldest_unread_age or 0.0)
        dropped.add_metric(values, item.dropped)
    yield from (waiting, oldest, dropped)


class _SnapshotCollector:
    """A prometheus_client collector that looks afresh at each scrape."""

    def __init__(self, look) -> None:
        self._look = look

    def collect(self) -> Iterator[Metric]:
        yield from families(self._look())


def make_server(source: StatusSource, host: str, port: int, timeout: float) -> HTTPServer:
    """The exporter's HTTP server (not yet serving); port 0 picks a free one."""
    lock = threading.Lock()  # one look at a time: the source's driver is shared

    def look() -> model.Snapshot:
        with lock:
            return source.look(ping=timeout, backlogs=True)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(look))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path == "/metrics":
                self._send(
                    200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(registry)
                )
            elif self.path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", render.page(look()).encode())
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: try / or /metrics\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")  # reload shows the present
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's name
            LOG.debug("exporter: " + format, *args)

    return HTTPServer((host, port), Handler)


def serve(source: StatusSource, host: str, port: int, timeout: float) -> None:
    """Serve until interrupted."""
    server = make_server(source, host, port, timeout)
    print(
        f"zmqdriver-status exporter on http://{host}:{server.server_port}/ (/metrics)", flush=True
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
