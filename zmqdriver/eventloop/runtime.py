"""Choose how the I/O loop talks back to application code."""

from __future__ import annotations

import abc
import functools
import logging
from collections.abc import Callable

from oslo_utils import eventletutils

LOG = logging.getLogger(__name__)


class Runtime(abc.ABC):
    """What differs between a threaded and an eventlet process."""

    @abc.abstractmethod
    def start_native_thread(self, target: Callable[[], None], name: str):
        """Start ``target`` in a real OS thread (the I/O loop must never be green)."""

    @abc.abstractmethod
    def deliver(self, fn: Callable, *args) -> None:
        """Run ``fn(*args)`` on the application side; called from the loop thread."""

    def log(self, level: int, msg: str, *args, exc_info: BaseException | None = None) -> None:
        """Log from the loop thread without touching green locks (with a traceback if given)."""
        self.deliver(functools.partial(LOG.log, exc_info=exc_info), level, msg, *args)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop helper threads or greenthreads."""


def runtime_for_process() -> Runtime:
    """The runtime matching this process: green if eventlet patched threads."""
    if eventletutils.is_monkey_patched("thread"):
        from zmqdriver.eventloop.green import GreenRuntime

        return GreenRuntime()
    from zmqdriver.eventloop.native import NativeRuntime

    return NativeRuntime()
