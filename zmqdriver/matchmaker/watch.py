"""What every push channel of a matchmaker does besides reading its backend.

A ``FollowedWatch`` is a ``Watch`` (``zmqdriver.matchmaker.base``) read by a
thread of its own: the subclass opens the channel and passes its changes on
(``_follow``); this class keeps the thread alive through failures, tells
clients whether changes are pushed right now (``up``), reopens the channel
with backoff, and logs each outage once. The etcd watch and the Redis
subscription share it, so both fall back to polling the same way.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable

from zmqdriver.backoff import Backoff

LOG = logging.getLogger(__name__)

# Pauses between attempts to open a channel that failed.
REOPEN_BACKOFF = Backoff(0.5, 10.0)


class FollowedWatch(abc.ABC):
    """A push channel under ``prefix``, followed by a thread until ``stop()``.

    ``label`` names the backend in log lines. The subclass calls
    ``_came_up()`` each time the channel is (again) in place, and
    ``_changed(key)`` for each change; ``start()`` runs the thread.
    """

    def __init__(
        self,
        label: str,
        prefix: str,
        on_change: Callable[[str | None], None],
        thread_name: str,
    ) -> None:
        self.label = label
        self.prefix = prefix
        self._on_change = on_change
        self._up = False
        self._stopped = threading.Event()
        self._down_since: float | None = None  # the last failure was logged
        self._pauses = REOPEN_BACKOFF.delays()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    @property
    def up(self) -> bool:
        return self._up

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._up = False
        self._interrupt()
        self._thread.join(5)

    def _interrupt(self) -> None:  # noqa: B027 - optional hook
        """Wake the thread from a blocking read (by default it wakes up on its own)."""

    @abc.abstractmethod
    def _follow(self) -> None:
        """Open the channel and pass its changes on until it breaks (raises) or ``stop()``."""

    def _quiet(self, exc: Exception) -> bool:
        """Whether ``exc`` only means that nothing changed for a while (reopen at once)."""
        return False

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._follow()
            except Exception as exc:  # the thread must survive whatever the channel raises
                self._up = False
                if self._stopped.is_set():
                    return
                if self._quiet(exc):
                    continue
                self._went_down(exc)
                self._stopped.wait(next(self._pauses))
                continue
            return

    def _went_down(self, exc: Exception) -> None:
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        LOG.warning(
            "%s: the watch of %s is down (%s); clients poll until it is back",
            self.label,
            self.prefix,
            exc,
        )

    def _came_up(self) -> None:
        """The channel is in place: what changed while it was not is unknown (a resync)."""
        if self._stopped.is_set():
            return
        self._up = True
        self._pauses = REOPEN_BACKOFF.delays()
        self._on_change(None)
        if self._down_since is not None:
            LOG.info(
                "%s: the watch of %s is back after %.0fs",
                self.label,
                self.prefix,
                time.monotonic() - self._down_since,
            )
            self._down_since = None

    def _changed(self, key: str) -> None:
        if not self._stopped.is_set():
            self._on_change(key)
