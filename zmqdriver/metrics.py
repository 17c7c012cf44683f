"""Counters of what this process's driver did: one registry per process.

Servers return them on the PING path (``zmqdriver-status ping``, the
exporter's ``/metrics``), so no service opens a port of its own.

Increments are plain ``dict`` updates without a lock: they run on every
message, in caller threads and the I/O loop, and under eventlet a
``threading.Lock`` is a green lock that must not be taken from the native
loop thread. Two threads incrementing one counter at the same instant may
lose one increment; for counters that are graphed as rates that is harmless.
"""

from __future__ import annotations

# Every counter, with what it counts (HELP text of the exporter).
COUNTERS: dict[str, str] = {
    "requests_received": "RPC requests (calls and casts) a server took, duplicates excluded",
    "requests_acked": "ACKs a server sent for requests it holds",
    "requests_rejected": "requests a server REJECTed, stopping or after a pause of its process "
    "(sent elsewhere by the client)",
    "pauses": "times a server's process noticed it had not run for a while (frozen or starved)",
    "duplicates_dropped": "resent requests a server recognised and did not run again",
    "resends": "requests a client sent again (no ACK in time, lost connection or REJECT)",
    "casts_held": "casts a client held because their target had no server yet",
    "connections_lost": "client connections to servers found lost or refused",
    "fanout_skipped": "fanout copies a client did not send because the server's connection "
    "was down (refused, or lost and not re-established)",
    "timeouts": "calls that failed with MessagingTimeout (or ServerLost)",
    "replies_late": "responses that arrived after their caller stopped waiting",
    "notifications_appended": "notifications stored by senders",
    "notifications_delivered": "notifications handed to listeners",
    "notifications_requeued": "notifications listeners requeued",
    "notifications_redelivered": "notifications delivered again (requeued, or their listener died)",
    "notifications_dropped": "unread notifications dropped by retention",
    "matchmaker_errors": "failed matchmaker lookups, registrations and refreshes",
}

_counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)


def incr(name: str, count: int = 1) -> None:
    """Add ``count`` to counter ``name`` (one of COUNTERS)."""
    _counts[name] += count


def snapshot() -> dict[str, int]:
    """Every counter's current value (a copy)."""
    return dict(_counts)
