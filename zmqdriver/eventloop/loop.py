"""IoLoop: one native thread that owns a driver's ZeroMQ sockets.

ZeroMQ sockets are not thread-safe, so exactly one thread touches them.
Callers hand work over with ``submit`` (fire and forget) or ``call`` (wait
for the result); tasks run in order. Sockets registered with ``add_reader``
have their messages passed to a callback in the loop thread.

Tasks come before reading: they run before every poll and between two
messages read, so a DONE or REPLY an executor thread finished never waits
behind a batch of new requests: a cast window turns over sooner and a
finished cast stays unconfirmed for less time (calls/s with 8 threads +19 %
in doc/benchmarks.md, Issue 16).
"""

from __future__ import annotations

import collections
import concurrent.futures
import heapq
import itertools
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import zmq
from eventlet import patcher

from zmqdriver.eventloop.pauses import PauseWatch
from zmqdriver.eventloop.runtime import Runtime

LOG = logging.getLogger(__name__)

# Pipes and the task lock are used from green and native threads alike: always
# the real os and the real (native) lock.
_os = patcher.original("os")
_threading = patcher.original("threading")

# Messages read from one socket before other sockets get a turn.
_READ_BATCH = 64


class LoopStopped(RuntimeError):
    """Work was handed to an I/O loop that has stopped."""


class IoLoop:
    def __init__(
        self, runtime: Runtime, name: str = "zmqdriver-io", pauses: PauseWatch | None = None
    ) -> None:
        """``pauses``, if given, is told every time the loop runs (see pauses.py)."""
        self.runtime = runtime
        self.pauses = pauses
        self._tasks: collections.deque = collections.deque()
        self._wake_r, self._wake_w = _os.pipe()
        _os.set_blocking(self._wake_r, False)
        _os.set_blocking(self._wake_w, False)
        self._poller = zmq.Poller()
        self._poller.register(self._wake_r, zmq.POLLIN)
        self._readers: dict[zmq.Socket, Callable[[list], None]] = {}
        self._timers: list[tuple[float, int, Callable, tuple]] = []  # a heap, loop thread only
        self._timer_seq = itertools.count()  # ties in time run in the order they were set
        self._sleeping = False
        self._running = True
        # Makes "still running?" and "queue the task" one step, so no task can
        # be queued after the loop's last drain.
        self._submit_lock = _threading.Lock()
        self._thread = runtime.start_native_thread(self._run, name)

    # -- called from any thread -------------------------------------------------

    def submit(self, fn: Callable, *args: Any) -> None:
        """Run ``fn(*args)`` in the loop thread, soon."""
        with self._submit_lock:
            if not self._running:
                raise LoopStopped("zmqdriver I/O loop is stopped")
            self._tasks.append((fn, args))
        # The loop checks the deque after it sets _sleeping, so a task appended
        # before this read is either seen by the loop or woken here.
        if self._sleeping:
            self._wake()

    def call(self, fn: Callable, *args: Any, timeout: float | None = 30.0) -> Any:
        """Run ``fn(*args)`` in the loop thread and return its result."""
        future: concurrent.futures.Future = concurrent.futures.Future()

        def task() -> None:
            try:
                result = fn(*args)
            except BaseException as exc:  # handed back to the caller
                self.runtime.deliver(future.set_exception, exc)
            else:
                self.runtime.deliver(future.set_result, result)

        self.submit(task)
        return future.result(timeout)

    def stop(self) -> None:
        """Close every registered socket and end the thread."""
        if not self._running:
            return
        try:
            self.call(self._shutdown)
        except (LoopStopped, concurrent.futures.TimeoutError):
            LOG.warning("zmqdriver I/O loop did not stop in time")
        self._thread.join(10)
        _os.close(self._wake_r)
        _os.close(self._wake_w)

    # -- called in the loop thread only ------------------------------------------

    def add_reader(self, socket: zmq.Socket, callback: Callable[[list], None]) -> None:
        self._readers[socket] = callback
        self._poller.register(socket, zmq.POLLIN)

    def drain(self, socket: zmq.Socket) -> None:
        """Handle every message waiting on ``socket`` now, before anything else."""
        while self._read(socket):
            pass

    def call_later(self, delay: float, fn: Callable, *args: Any) -> None:
        """Run ``fn(*args)`` in the loop thread after ``delay`` seconds."""
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_seq), fn, args))

    def remove_reader(self, socket: zmq.Socket) -> None:
        if self._readers.pop(socket, None) is not None:
            self._poller.unregister(socket)

    def _shutdown(self) -> None:
        for socket in list(self._readers):
            self.remove_reader(socket)
            socket.close()
        with self._submit_lock:
            self._running = False

    def _wake(self) -> None:
        try:
            _os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # already awake, or closing

    def _run(self) -> None:
        while self._running:
            self._run_tasks()
            if not self._running:
                break
            self._sleeping = True
            timeout = 0 if self._tasks else self._poll_timeout_ms()
            try:
                events = self._poller.poll(timeout)
            except zmq.ZMQError as exc:
                self.runtime.log(logging.ERROR, "zmqdriver I/O loop poll failed: %s", exc)
                continue
            finally:
                self._sleeping = False
            if self.pauses is not None:
                # Before anything is read: what waited through a pause must be seen as such.
                self.pauses.awake(timeout / 1000)
            for socket, _ in events:
                if socket == self._wake_r:
                    self._drain_wake_pipe()
                else:
                    self._read(socket)
            self._run_timers()
        # Tasks queued just before the stop still run (their callers are waiting).
        self._run_tasks()

    def _run_tasks(self) -> None:
        tasks = self._tasks
        while tasks:
            fn, args = tasks.popleft()
            try:
                fn(*args)
            except Exception as exc:  # a bug: say where, and keep the loop alive
                self.runtime.log(logging.ERROR, "zmqdriver I/O task %r failed", fn, exc_info=exc)

    def _poll_timeout_ms(self) -> int | None:
        longest = None if self.pauses is None else math.ceil(self.pauses.longest_sleep * 1000)
        if not self._timers:
            return longest
        due = max(0, math.ceil((self._timers[0][0] - time.monotonic()) * 1000))
        return due if longest is None else min(due, longest)

    def _run_timers(self) -> None:
        timers, now = self._timers, time.monotonic()
        while timers and timers[0][0] <= now:
            _, _, fn, args = heapq.heappop(timers)
            try:
                fn(*args)
            except Exception as exc:  # a bug: say where, and keep the loop alive
                self.runtime.log(logging.ERROR, "zmqdriver I/O timer %r failed", fn, exc_info=exc)

    def _drain_wake_pipe(self) -> None:
        try:
            _os.read(self._wake_r, 65536)
        except (BlockingIOError, OSError):
            pass

    def _read(self, socket: zmq.Socket) -> bool:
        """Handle up to _READ_BATCH messages of ``socket``; True if more may be waiting."""
        callback = self._readers.get(socket)
        for _ in range(_READ_BATCH):
            if callback is None or socket.closed:
                return False
            if self.pauses is not None:
                self.pauses.awake()  # a pause in the middle of a batch counts too
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return False
            except zmq.ZMQError as exc:
                self.runtime.log(logging.WARNING, "zmqdriver: receive failed: %s", exc)
                return False
            try:
                callback(frames)
            except Exception as exc:  # a bug: say where, and keep the loop alive
                self.runtime.log(
                    logging.ERROR,
                    "zmqdriver: handling a message with %r failed",
                    callback,
                    exc_info=exc,
                )
            if self._tasks:
                # Answers first: a DONE that waits behind a batch of new requests
                # leaves its cast ambiguous for longer (run twice if this process dies).
                self._run_tasks()
            callback = self._readers.get(socket)
        return True
