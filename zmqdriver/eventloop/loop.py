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

A turn costs what happened, not how many sockets are open: the loop waits on
each socket's ``ZMQ_FD`` with epoll (Linux) and asks ``ZMQ_EVENTS`` only of
the sockets whose descriptor fired. A client of 1,000 servers has some 2,000
sockets; ``zmq_poll`` looked at every one of them on every turn (doc/scaling.md).
The descriptor is edge-like: it fires when the socket *may* have changed, and
any operation on the socket (a send too) can consume that signal. Hence the
invariant this file keeps: **a socket whose readability is unknown is in
``_unchecked``** until ``ZMQ_EVENTS`` has been read after its last operation:
new readers, sockets whose descriptor fired, sockets read up to the batch
limit, and sockets something sent on (``sent_on``; a send from a socket's own
read callback needs nothing, since the loop reads that socket until it is
empty or puts it back in ``_unchecked``). A sweep of every reader
every ``SWEEP_EVERY`` seconds bounds the delay of any signal missed anyway.

One exception to "one thread per socket": a reader added with a ``lock`` may
also be used by other threads holding that lock (a mutex is the full memory
barrier ZeroMQ asks for when a socket changes threads); the loop takes it for
each of its own operations on that socket. A thread that operated on it calls
``recheck`` before it lets the lock go, since its operation may have taken the
descriptor's signal.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import heapq
import itertools
import logging
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
_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_ZERO_COPY = zmq.COPY_THRESHOLD  # pyzmq's own threshold for copy=False
# Every reader is checked at least this often, whatever its descriptor said.
SWEEP_EVERY = 0.5

# The loop is a native thread: never eventlet's green select (which has no epoll).
_select = patcher.original("select")


def native_lock() -> Any:
    """A lock of the OS thread library even under eventlet, for state the loop thread
    shares with application threads: a native thread must never take a green lock.
    Hold it only briefly: a greenthread waiting for it blocks its whole OS thread."""
    return _threading.Lock()


def send_frames(socket: zmq.Socket, frames: list[bytes]) -> None:
    """Send a multipart message without blocking (zmq.Again: the peer's queue is full).

    Frame by frame with plain int flags: pyzmq's ``send_multipart`` costs two to
    three times as much for small frames (enum flag arithmetic, trackers with
    ``copy=False``); frames of ``_ZERO_COPY`` bytes or more are not copied.
    """
    for frame in frames[:-1]:
        socket.send(frame, _SNDMORE_NOBLOCK, copy=len(frame) < _ZERO_COPY)
    socket.send(frames[-1], _NOBLOCK, copy=len(frames[-1]) < _ZERO_COPY)


def readable(socket: zmq.Socket) -> bool:
    """Whether a message waits on ``socket`` (this reads, and settles, its state)."""
    return bool(socket.get(_EVENTS) & _POLLIN)


def recv_frames(socket: zmq.Socket) -> list[bytes]:
    """One whole multipart message, without blocking (zmq.Again: none waits).

    Each frame's ``more`` flag comes with the frame: asking ``ZMQ_RCVMORE`` per
    frame, as ``recv_multipart`` does, cost our three-frame messages half as much
    again (6.6 against 4.1 µs). Once the first frame is in, ZeroMQ guarantees
    the rest of the message is too.
    """
    frame = socket.recv(_NOBLOCK, copy=False)
    frames = [frame.bytes]
    while frame.more:
        frame = socket.recv(_NOBLOCK, copy=False)
        frames.append(frame.bytes)
    return frames


class LoopStopped(RuntimeError):
    """Work was handed to an I/O loop that has stopped."""


class IoLoop:
    def __init__(
        self,
        runtime: Runtime,
        name: str = "zmqdriver-io",
        pauses: PauseWatch | None = None,
        sweep_every: float = SWEEP_EVERY,
    ) -> None:
        """``pauses``, if given, is told every time the loop runs (see pauses.py);
        ``sweep_every``: seconds between two looks at every reader (see above)."""
        self.runtime = runtime
        self.pauses = pauses
        self._sweep_every = sweep_every
        self._tasks: collections.deque = collections.deque()
        self._turn_end: list = []
        self._wake_r, self._wake_w = _os.pipe()
        _os.set_blocking(self._wake_r, False)
        _os.set_blocking(self._wake_w, False)
        self._epoll = _select.epoll()
        self._epoll.register(self._wake_r, _select.EPOLLIN)
        self._readers: dict[zmq.Socket, Callable[[list], None]] = {}
        self._locks: dict[zmq.Socket, Any] = {}  # each reader's lock, or a null one
        self._unchecked: set[zmq.Socket] = set()  # readability unknown: see the docstring
        self._fds: dict[zmq.Socket, int] = {}  # each reader's ZMQ_FD, as registered
        self._by_fd: dict[int, zmq.Socket] = {}
        self._next_sweep = 0.0
        self._timers: list[tuple[float, int, Callable, tuple]] = []  # a heap, loop thread only
        self._timer_seq = itertools.count()  # ties in time run in the order they were set
        self._sleeping = False
        self._running = True
        # Makes "still running?" and "queue the task" one step, so no task can
        # be queued after the loop's last drain.
        self._submit_lock = native_lock()
        self._ident: int | None = None  # the loop thread's, once it runs
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

    def in_loop_thread(self) -> bool:
        """Whether the calling thread is the loop's own."""
        return _threading.get_ident() == self._ident

    def after_reading(self, fn: Callable, *args: Any) -> None:
        """``at_turn_end`` when called in the loop thread; in any other thread, now."""
        if self.in_loop_thread():
            self.at_turn_end(fn, *args)
        else:
            fn(*args)

    @property
    def waiting(self) -> bool:
        """Whether the loop thread is waiting for events (a hint: it may change at once)."""
        return self._sleeping

    def recheck(self, socket: zmq.Socket) -> None:
        """Another thread used ``socket`` (a reader with a lock, which it still holds):
        if a message waits, the loop looks again, since the use may have taken the signal.

        In the loop thread itself (a DONE's callback sending the next queued fanout
        copy) this is ``sent_on``: the loop looks before it waits again anyway, once
        per socket however many sends this turn made.
        """
        if self.in_loop_thread():
            self.sent_on(socket)
            return
        try:
            waiting = not socket.closed and readable(socket)
        except zmq.ZMQError:
            waiting = True  # unknown: let the loop look
        if waiting:
            self.submit(self.sent_on, socket)

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
        if self._thread.is_alive():
            return  # stuck in a task: it keeps its descriptors (a daemon, gone at exit)
        self._epoll.close()
        _os.close(self._wake_r)
        _os.close(self._wake_w)

    # -- called in the loop thread only ------------------------------------------

    def add_reader(
        self, socket: zmq.Socket, callback: Callable[[list], None], lock: Any = None
    ) -> None:
        """Read ``socket`` here; ``lock``: other threads use it too (see the docstring)."""
        self._readers[socket] = callback
        self._locks[socket] = lock or contextlib.nullcontext()
        fd = self._fds[socket] = socket.getsockopt(zmq.FD)
        self._by_fd[fd] = socket
        self._epoll.register(fd, _select.EPOLLIN)
        self._unchecked.add(socket)  # messages may be waiting already

    def send(self, socket: zmq.Socket, frames: list[bytes]) -> None:
        """``send_frames`` in the loop thread (zmq.Again: the peer's queue is full)."""
        try:
            send_frames(socket, frames)
        finally:
            self.sent_on(socket)

    def sent_on(self, socket: zmq.Socket) -> None:
        """``socket`` was just sent on: the send may have taken its descriptor's signal."""
        if socket in self._readers:
            self._unchecked.add(socket)

    def drain(self, socket: zmq.Socket) -> None:
        """Handle every message waiting on ``socket`` now, before anything else."""
        while self._read(socket):
            pass

    def call_later(self, delay: float, fn: Callable, *args: Any) -> None:
        """Run ``fn(*args)`` in the loop thread after ``delay`` seconds."""
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_seq), fn, args))

    def remove_reader(self, socket: zmq.Socket) -> None:
        """Stop reading ``socket``; call before closing it (its descriptor goes with it)."""
        self._locks.pop(socket, None)
        if self._readers.pop(socket, None) is not None:
            fd = self._fds.pop(socket)
            if self._by_fd.get(fd) is socket:  # not a newer socket given the same number
                del self._by_fd[fd]
                try:
                    self._epoll.unregister(fd)
                except OSError:
                    pass  # closed already (its context destroyed): epoll forgot it then
            self._unchecked.discard(socket)

    def _shutdown(self) -> None:
        for socket in list(self._readers):
            with self._locks[socket]:  # another thread may be using it (see add_reader)
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
        self._ident = _threading.get_ident()
        while self._running:
            self._run_tasks()
            if not self._running:
                break
            self._sleeping = True
            busy = self._tasks or self._unchecked or self._turn_end
            timeout = 0.0 if busy else self._poll_timeout()
            try:
                fired = self._epoll.poll(timeout)
            finally:
                self._sleeping = False
            if self.pauses is not None:
                # Before anything is read: what waited through a pause must be seen as such.
                self.pauses.awake(timeout)
            for fd, _ in fired:
                if fd == self._wake_r:
                    self._drain_wake_pipe()
                elif fd in self._by_fd:
                    self._unchecked.add(self._by_fd[fd])
            self._sweep_if_due()
            self._read_unchecked()
            self._run_timers()
            if self._turn_end:
                self._run_turn_end()
        # Tasks queued just before the stop still run (their callers are waiting).
        self._run_tasks()
        self._run_turn_end()

    def _read_unchecked(self) -> None:
        checking, self._unchecked = self._unchecked, set()
        for socket in checking:
            if socket not in self._readers or socket.closed:
                continue
            try:
                with self._locks[socket]:
                    waiting = readable(socket)
            except zmq.ZMQError as exc:
                self.runtime.log(logging.WARNING, "zmqdriver: socket state unknown: %s", exc)
                continue
            if waiting and self._read(socket):
                self._unchecked.add(socket)  # the batch ended, not the messages

    def _sweep_if_due(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self._sweep_every
            self._unchecked.update(self._readers)

    def at_turn_end(self, fn: Callable, *args: Any) -> None:
        """Run ``fn(*args)`` once this turn has read every socket due, before the loop
        waits again (call in the loop thread only).

        For work that wakes other Python threads: woken in the middle of a turn,
        such a thread preempts the loop and then waits for the GIL the loop holds.
        """
        self._turn_end.append((fn, args))

    def _run_turn_end(self) -> None:
        work, self._turn_end = self._turn_end, []
        for fn, args in work:
            self._run_guarded("task", fn, args)

    def _run_guarded(self, what: str, fn: Callable, args: tuple) -> None:
        try:
            fn(*args)
        except Exception as exc:  # a bug: say where, and keep the loop alive
            self.runtime.log(logging.ERROR, "zmqdriver I/O %s %r failed", what, fn, exc_info=exc)

    def _run_tasks(self) -> None:
        tasks = self._tasks
        while tasks:
            fn, args = tasks.popleft()
            self._run_guarded("task", fn, args)

    def _poll_timeout(self) -> float:
        """Seconds until the next timer, or the longest sleep that lets the loop see a pause
        (or else sweep) in time."""
        longest = self._sweep_every if self.pauses is None else self.pauses.longest_sleep
        if not self._timers:
            return longest
        return max(0.0, min(self._timers[0][0] - time.monotonic(), longest))

    def _run_timers(self) -> None:
        timers, now = self._timers, time.monotonic()
        while timers and timers[0][0] <= now:
            _, _, fn, args = heapq.heappop(timers)
            self._run_guarded("timer", fn, args)

    def _drain_wake_pipe(self) -> None:
        try:
            _os.read(self._wake_r, 65536)
        except (BlockingIOError, OSError):
            pass

    def _read(self, socket: zmq.Socket) -> bool:
        """Handle up to _READ_BATCH messages of ``socket``; True if more may be waiting."""
        callback = self._readers.get(socket)
        lock = self._locks.get(socket)
        for _ in range(_READ_BATCH):
            if callback is None or socket.closed:
                return False
            if self.pauses is not None:
                self.pauses.awake()  # a pause in the middle of a batch counts too
            try:
                with lock:
                    frames = recv_frames(socket)
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
