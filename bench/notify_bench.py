"""Notification throughput through oslo.messaging's public API, for any transport URL.

The notifier runs in this process on ``cfg.CONF`` (parsed once by the
caller), on a notification transport; the listener (bench/notify_listener.py)
runs in its own process with the threading (or eventlet) executor, on a topic unique to
this run. bench/rpc_bench.py starts it with the RPC servers, so it listens
before anything is sent.
"""

from __future__ import annotations

import time
import uuid

import oslo_messaging
from oslo_config import cfg

from bench.measure import SMALL, Counts, Deadline, Result
from bench.notify_listener import END_EVENT
from bench.procs import Child, child_spec

EVENT = "bench.sample"
DONE_MARGIN = 10.0  # seconds beyond the listener's own drain cap to wait for its DONE line


def listener_spec(
    url: str, config_file: str, counts: Counts, executor: str = "threading"
) -> tuple[tuple, str]:
    """The listener process to start (for ``start_children``) and its topic, unique to the run.

    It is started with the RPC servers, before anything is sent to it.
    """
    topic = f"bench-{uuid.uuid4().hex[:8]}-notify"
    args = [
        "--config-file", config_file,
        "--url", url,
        "--topic", topic,
        "--drain-cap", str(counts.drain_cap),
        "--executor", executor,
    ]  # fmt: skip
    return child_spec("bench.notify_listener", args, "notification listener", executor), topic


def measure(url: str, listener: Child, topic: str, counts: Counts, result: Result) -> None:
    """Notifications from this thread to ``listener`` (already listening on ``topic``)."""
    transport = oslo_messaging.get_notification_transport(cfg.CONF, url=url)
    try:
        notifier = oslo_messaging.Notifier(
            transport, publisher_id="bench", driver="messagingv2", topics=[topic]
        )
        # Warm-up: connections, the store's tables or streams, the broker's queue.
        warm = max(1, counts.warmup // 10)
        received, _ = _send(notifier, listener, warm, Deadline(counts.drain_cap), counts)
        if received < warm:
            raise RuntimeError(f"warm-up notifications not all received: {received} of {warm}")
        start = time.monotonic()
        deadline = Deadline(counts.notify_cap)
        received, last = _send(notifier, listener, counts.notifications, deadline, counts, result)
        if received:
            result.values["notify_tput"] = received / (last - start)
    finally:
        transport.cleanup()


def _send(
    notifier,
    listener: Child,
    count: int,
    deadline: Deadline,
    counts: Counts,
    result: Result | None = None,
) -> tuple[int, float]:
    """Send up to ``count`` notifications back to back, then the end marker; wait for DONE.

    Returns how many the listener received and when the last one arrived
    (time.monotonic() in the listener's process: the same clock as ours).
    """
    tag = f"notes-{uuid.uuid4().hex[:8]}"
    payload = {"tag": tag, "data": "x" * SMALL}
    sent = 0
    while sent < count and not deadline.expired:
        notifier.info({}, EVENT, payload)
        sent += 1
    if result is not None and sent < count:
        result.notes.append(f"notifications: time cap hit after {sent} of {count}")
    notifier.info({}, END_EVENT, {"tag": tag, "sent": sent})
    line = listener.expect(f"DONE {tag} ", counts.drain_cap + DONE_MARGIN)
    _, _, received, last = line.split()
    if result is not None and int(received) < sent:
        result.notes.append(
            f"LOST NOTIFICATIONS: of {sent} sent, the listener received only {received} "
            f"within {counts.drain_cap:.0f} s"
        )
    return int(received), float(last)
