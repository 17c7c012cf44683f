"""Runtime for processes using real threads (the threading executor)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from zmqdriver.eventloop.runtime import Runtime

LOG = logging.getLogger(__name__)


class NativeRuntime(Runtime):
    def start_native_thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def deliver(self, fn: Callable, *args) -> None:
        # Waiters are thread-safe; completing them in the loop thread saves a hop.
        try:
            fn(*args)
        except Exception:
            LOG.exception("zmqdriver: delivering %r from the I/O loop failed", fn)

    def log(self, level: int, msg: str, *args, exc_info: BaseException | None = None) -> None:
        LOG.log(level, msg, *args, exc_info=exc_info)
