"""Runtime for eventlet monkey-patched processes.

The I/O loop still runs in a native thread (a blocking zmq poll in a
greenthread would freeze the hub). It hands completions to a single
greenthread in the hub through a deque and a pipe, the way eventlet's tpool
does, because green locks and events must only be used from the hub's thread.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

import eventlet
from eventlet import hubs, patcher

from zmqdriver.eventloop.runtime import Runtime

LOG = logging.getLogger(__name__)

_os = patcher.original("os")
_threading = patcher.original("threading")


class GreenRuntime(Runtime):
    def __init__(self) -> None:
        self._pending: collections.deque = collections.deque()
        self._read_fd, self._write_fd = _os.pipe()
        _os.set_blocking(self._read_fd, False)
        _os.set_blocking(self._write_fd, False)
        self._closed = False
        self._bridge = eventlet.spawn(self._run_bridge)

    def start_native_thread(self, target: Callable[[], None], name: str):
        thread = _threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def deliver(self, fn: Callable, *args) -> None:
        self._pending.append((fn, args))
        try:
            _os.write(self._write_fd, b"x")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already: the bridge will run
        except OSError:
            pass  # closed during shutdown

    def _run_bridge(self) -> None:
        while not self._closed:
            try:
                hubs.trampoline(self._read_fd, read=True)
                _os.read(self._read_fd, 65536)
            except BlockingIOError:
                pass
            except OSError:
                return
            while self._pending:
                fn, args = self._pending.popleft()
                try:
                    fn(*args)
                except Exception:
                    LOG.exception("zmqdriver: delivering %r from the I/O loop failed", fn)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.deliver(lambda: None)
        self._bridge.wait()
        _os.close(self._read_fd)
        _os.close(self._write_fd)
