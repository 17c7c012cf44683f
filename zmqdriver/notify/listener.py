"""Notification listeners: read a pool's streams from the store, settle each message.

oslo's notification server runs ``poll`` in its own thread (through
``PollStyleListenerAdapter``) and acknowledges or requeues every message
after its endpoint has run, so a listener that dies mid-batch leaves its
messages pending and another listener of the pool gets them.
"""

from __future__ import annotations

import logging
import time

from oslo_messaging._drivers import base
from oslo_messaging._drivers import common as driver_common
from oslo_serialization import jsonutils

from zmqdriver import metrics, protocol
from zmqdriver.backoff import Backoff
from zmqdriver.exceptions import BackendError
from zmqdriver.notify.store import NotificationStore, StoredNotification
from zmqdriver.throttle import Throttle

LOG = logging.getLogger(__name__)

# Longest single wait on the store, so stop() is noticed quickly.
_WAIT_SLICE = 0.5
# Pauses between reads while the store fails (each also ends at the poll's deadline).
_READ_BACKOFF = Backoff(0.1, 1.0)
# An outage fails every read: say so once per period, with a count.
_LOG_READ_FAILURES_EVERY = 10.0


def encode_notification(ctxt: dict, message: dict, version: float) -> str:
    """The stored payload; version 2.0 wraps the message in oslo's envelope."""
    if version >= 2.0:
        message = driver_common.serialize_msg(message)
    return protocol.json_text({"ctxt": protocol.context_dict(ctxt), "message": message})


def decode_notification(payload: str) -> tuple[dict, dict]:
    """(ctxt, message) of a stored payload; ValueError when it is malformed."""
    try:
        data = jsonutils.loads(payload)
        message = driver_common.deserialize_msg(data["message"])
        ctxt = data.get("ctxt") or {}
    except Exception as exc:
        raise ValueError(f"stored notification does not decode: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(ctxt, dict):
        raise ValueError("stored notification is not a map")
    return ctxt, message


class NotificationMessage(base.IncomingMessage):
    def __init__(
        self,
        store: NotificationStore,
        group: str,
        stored: StoredNotification,
        ctxt: dict,
        message: dict,
    ) -> None:
        super().__init__(ctxt, message, msg_id=f"{stored.stream}#{stored.id}")
        self._store = store
        self._group = group
        self._stored = stored

    def acknowledge(self) -> None:
        try:
            self._store.ack(self._stored, self._group)
        except BackendError as exc:
            LOG.error(
                "Cannot acknowledge notification %s (%s); it will be delivered again",
                self.msg_id,
                exc,
            )

    def requeue(self) -> None:
        metrics.incr("notifications_requeued")
        try:
            self._store.requeue(self._stored, self._group)
        except BackendError as exc:
            LOG.error(
                "Cannot requeue notification %s (%s); it will be redelivered later",
                self.msg_id,
                exc,
            )


class NotificationListener(base.PollStyleListener):
    def __init__(
        self, store: NotificationStore, streams: list[str], group: str, consumer: str
    ) -> None:
        super().__init__()
        self._store = store
        self._streams = streams
        self._group = group
        self._consumer = consumer
        self._stopped = False
        # A store may hand out more than asked (Redis counts per stream);
        # the surplus is ours already and waits here for the next poll.
        self._surplus: list[NotificationMessage] = []
        self._read_failures = Throttle(every=_LOG_READ_FAILURES_EVERY)
        store.subscribe(streams, group, consumer)

    def poll(self, timeout=None, batch_size=1, batch_timeout=None):
        if self._stopped:
            return []
        deadline = None if timeout is None else time.monotonic() + timeout
        batch = self._read(batch_size, deadline)
        if batch and batch_timeout and len(batch) < batch_size:
            fill_deadline = time.monotonic() + batch_timeout
            while len(batch) < batch_size and not self._stopped:
                more = self._read(batch_size - len(batch), fill_deadline)
                if not more:
                    break
                batch += more
        return batch

    def _read(self, count: int, deadline: float | None) -> list[NotificationMessage]:
        if self._surplus:
            batch, self._surplus = self._surplus[:count], self._surplus[count:]
            return batch
        pauses = _READ_BACKOFF.delays()
        while not self._stopped:
            wait = _WAIT_SLICE
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                return []
            try:
                stored = self._store.read(self._streams, self._group, self._consumer, count, wait)
            except BackendError as exc:
                self._note_read_failure(exc)
                time.sleep(min(next(pauses), wait))
                continue
            self._read_failures.forget()  # the next outage is reported at once
            messages = [m for m in map(self._incoming, stored) if m is not None]
            metrics.incr("notifications_delivered", len(messages))
            if messages:
                self._surplus = messages[count:]
                return messages[:count]
        return []

    def _note_read_failure(self, exc: BackendError) -> None:
        suppressed = self._read_failures.admit()
        if suppressed is not None:
            LOG.error(
                "Reading notifications failed (%s); retrying (%d more failures since the "
                "last report)",
                exc,
                suppressed,
            )

    def _incoming(self, stored: StoredNotification) -> NotificationMessage | None:
        try:
            ctxt, message = decode_notification(stored.payload)
        except ValueError as exc:
            LOG.error("Dropping notification %s#%s: %s", stored.stream, stored.id, exc)
            self._store.ack(stored, self._group)
            return None
        return NotificationMessage(self._store, self._group, stored, ctxt, message)

    def stop(self) -> None:
        self._stopped = True
        # Prefetched but never handed to the server: others may have them now.
        surplus, self._surplus = self._surplus, []
        for message in surplus:
            message.requeue()
        try:
            self._store.unsubscribe(self._streams, self._group, self._consumer)
        except BackendError as exc:
            LOG.warning(
                "Leaving the notification pool failed (%s); its messages move on "
                "after zmq_notification_redelivery",
                exc,
            )
