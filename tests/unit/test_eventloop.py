"""The I/O loop: tasks, calls and socket readers, with native and green runtimes."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest
import zmq

from harness.wait import eventually
from zmqdriver.eventloop import IoLoop, runtime_for_process
from zmqdriver.eventloop.loop import LoopStopped
from zmqdriver.eventloop.native import NativeRuntime

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # generous: conditions are normally met in milliseconds


class Boom(Exception):
    pass


@pytest.fixture
def loop() -> Iterator[IoLoop]:
    io_loop = IoLoop(NativeRuntime(), name="test-io")
    yield io_loop
    io_loop.stop()


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def _thread_named(name: str) -> threading.Thread:
    (thread,) = [t for t in threading.enumerate() if t.name == name]
    return thread


def test_runtime_for_a_plain_process_is_native():
    assert isinstance(runtime_for_process(), NativeRuntime)


# -- call / submit -----------------------------------------------------------------


def test_call_returns_the_result(loop):
    assert loop.call(lambda a, b: a + b, 2, 3) == 5
    result = {"x": [1]}
    assert loop.call(lambda: result) is result


def test_call_re_raises_the_exception_in_the_caller(loop):
    error = Boom("from the loop")

    def fail():
        raise error

    with pytest.raises(Boom) as info:
        loop.call(fail)
    assert info.value is error
    # The loop survives a failing call.
    assert loop.call(lambda: "still running") == "still running"


def test_call_runs_in_the_loop_thread(loop):
    loop_ident = loop.call(threading.get_ident)
    assert loop_ident != threading.get_ident()
    assert loop.call(threading.get_ident) == loop_ident
    assert loop.call(lambda: threading.current_thread().name) == "test-io"


def test_submit_runs_tasks_in_order_in_the_loop_thread(loop):
    ran: list[tuple[int, int]] = []
    for i in range(200):
        loop.submit(lambda i=i: ran.append((i, threading.get_ident())))
    loop_ident = loop.call(threading.get_ident)  # queued after the 200 tasks
    assert [i for i, _ in ran] == list(range(200))
    assert {ident for _, ident in ran} == {loop_ident}
    assert loop_ident != threading.get_ident()


def test_submit_passes_arguments(loop):
    seen = []
    loop.submit(seen.append, "arg")
    loop.call(lambda: None)
    assert seen == ["arg"]


def test_a_failing_task_is_logged_with_its_traceback_and_the_loop_goes_on(loop, caplog):
    def fail():
        raise Boom("task failed")

    with caplog.at_level(logging.ERROR):
        loop.submit(fail)
        assert loop.call(lambda: "next") == "next"
    [record] = [r for r in caplog.records if "failed" in r.getMessage()]
    assert record.exc_info[1].args == ("task failed",)
    assert "in fail" in caplog.text  # the traceback names the failing function


def test_a_failing_timer_is_logged_with_its_traceback_and_later_timers_run(loop, caplog):
    ran = threading.Event()

    def bad_timer():
        raise Boom("timer failed")

    with caplog.at_level(logging.ERROR):
        loop.call(loop.call_later, 0.0, bad_timer)
        loop.call(loop.call_later, 0.01, ran.set)
        assert ran.wait(WAIT)
    [failure] = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert failure.args == ("timer failed",)
    assert "in bad_timer" in caplog.text


def test_call_times_out_while_the_loop_is_busy(loop):
    release = threading.Event()
    loop.submit(release.wait, WAIT)
    try:
        with pytest.raises(concurrent.futures.TimeoutError):
            loop.call(lambda: None, timeout=0.05)
    finally:
        release.set()
    assert loop.call(lambda: "free again") == "free again"


def test_calls_from_many_threads(loop):
    # Every caller must wake the loop (a lost wake-up would hang a call).
    def caller(n: int) -> list[int]:
        return [loop.call(lambda i=i: i * n, timeout=WAIT) for i in range(100)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(caller, range(8)))
    assert results == [[i * n for i in range(100)] for n in range(8)]


def test_tasks_submitted_by_a_task_run_too(loop):
    ran = []
    loop.submit(lambda: loop.submit(ran.append, "inner"))
    assert eventually(lambda: ran == ["inner"], WAIT, poll=0.005)


# -- readers -------------------------------------------------------------------------


def _pair(ctx: zmq.Context, name: str) -> tuple[zmq.Socket, zmq.Socket]:
    """A connected PAIR of inproc sockets; call in the loop thread."""
    receiver = ctx.socket(zmq.PAIR)
    receiver.bind(f"inproc://{name}")
    sender = ctx.socket(zmq.PAIR)
    sender.connect(f"inproc://{name}")
    return receiver, sender


def test_add_reader_delivers_messages_in_the_loop_thread(loop, ctx):
    received: list[tuple[list[bytes], int]] = []
    receiver, sender = loop.call(_pair, ctx, "delivers")

    def on_message(frames):
        received.append((frames, threading.get_ident()))

    loop.call(loop.add_reader, receiver, on_message)
    for i in range(5):
        loop.submit(sender.send_multipart, [b"header", f"body-{i}".encode()])
    assert eventually(lambda: len(received) == 5, WAIT, poll=0.005)
    assert [frames for frames, _ in received] == [
        [b"header", f"body-{i}".encode()] for i in range(5)
    ]
    assert {ident for _, ident in received} == {loop.call(threading.get_ident)}
    loop.call(sender.close)


def test_push_pull_over_tcp(loop, ctx):
    received = []

    def setup():
        pull = ctx.socket(zmq.PULL)
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push = ctx.socket(zmq.PUSH)
        push.connect(f"tcp://127.0.0.1:{port}")
        loop.add_reader(pull, received.append)
        return push

    push = loop.call(setup)
    loop.submit(push.send_multipart, [b"a", b"b", b"c"])
    assert eventually(lambda: received == [[b"a", b"b", b"c"]], WAIT, poll=0.005)
    loop.call(push.close, 0)


def test_send_delivers_small_and_large_frames_intact(loop, ctx):
    received = []
    receiver, sender = loop.call(_pair, ctx, "send")
    loop.call(loop.add_reader, receiver, received.append)
    large = os.urandom(zmq.COPY_THRESHOLD + 1)  # sent without a copy
    loop.submit(loop.send, sender, [b"identity", b"header", large])
    loop.submit(loop.send, sender, [b"one frame"])
    assert eventually(lambda: len(received) == 2, WAIT, poll=0.005)
    assert received == [[b"identity", b"header", large], [b"one frame"]]
    loop.call(sender.close)


def test_a_failing_reader_callback_does_not_stop_delivery(loop, ctx, caplog):
    received = []
    receiver, sender = loop.call(_pair, ctx, "failing-callback")

    def on_message(frames):
        received.append(frames)
        if frames == [b"bad"]:
            raise Boom("handler failed")

    loop.call(loop.add_reader, receiver, on_message)
    with caplog.at_level(logging.ERROR):
        for body in (b"ok-1", b"bad", b"ok-2"):
            loop.submit(sender.send_multipart, [body])
        assert eventually(lambda: len(received) == 3, WAIT, poll=0.005)
    assert received == [[b"ok-1"], [b"bad"], [b"ok-2"]]
    [failure] = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert failure.args == ("handler failed",)  # logged with its traceback
    assert "in on_message" in caplog.text
    loop.call(sender.close)


def test_remove_reader_stops_delivery(loop, ctx):
    received = []
    receiver, sender = loop.call(_pair, ctx, "remove")
    loop.call(loop.add_reader, receiver, received.append)
    loop.submit(sender.send_multipart, [b"first"])
    assert eventually(lambda: received == [[b"first"]], WAIT, poll=0.005)

    loop.call(loop.remove_reader, receiver)
    loop.call(sender.send_multipart, [b"second"])
    # The loop left it in the socket: reading it ourselves (in the loop thread) finds it.
    assert loop.call(lambda: receiver.poll(WAIT * 1000) and receiver.recv_multipart()) == [
        b"second"
    ]
    assert received == [[b"first"]]
    loop.call(loop.remove_reader, receiver)  # removing twice is harmless
    loop.call(receiver.close)
    loop.call(sender.close)


def test_a_busy_socket_does_not_starve_the_others(loop, ctx):
    order: list[bytes] = []

    def setup():
        busy_rx, busy_tx = _pair(ctx, "busy")
        quiet_rx, quiet_tx = _pair(ctx, "quiet")
        busy_tx.set_hwm(0)
        busy_rx.set_hwm(0)
        for _ in range(1000):
            busy_tx.send(b"busy")
        quiet_tx.send(b"quiet")
        # Both are readable before the loop polls them for the first time.
        loop.add_reader(busy_rx, lambda frames: order.append(frames[0]))
        loop.add_reader(quiet_rx, lambda frames: order.append(frames[0]))
        return busy_tx, quiet_tx

    senders = loop.call(setup)
    assert eventually(lambda: len(order) == 1001, WAIT, poll=0.005)
    assert order.index(b"quiet") <= 256  # at most one batch of the busy socket first
    for sender in senders:
        loop.call(sender.close)


# -- what a turn looks at ----------------------------------------------------------------


class _CountingSocket(zmq.Socket):
    """Counts how often the loop asks whether it is readable."""

    events_read = 0

    def get(self, option):
        if option == zmq.EVENTS:
            self.events_read += 1
        return super().get(option)


@pytest.fixture
def unswept_loop() -> Iterator[IoLoop]:
    """A loop that never sweeps: only descriptors and ``sent_on`` say what to read."""
    io_loop = IoLoop(NativeRuntime(), name="test-io-unswept", sweep_every=3600)
    yield io_loop
    io_loop.stop()


def test_a_turn_looks_only_at_sockets_that_may_have_changed(unswept_loop, ctx):
    loop, received = unswept_loop, []

    def setup():
        idle = []
        for i in range(200):
            rx = ctx.socket(zmq.PAIR, socket_class=_CountingSocket)
            rx.bind(f"inproc://idle-{i}")
            tx = ctx.socket(zmq.PAIR)
            tx.connect(f"inproc://idle-{i}")
            loop.add_reader(rx, lambda frames: None)
            idle.append((rx, tx))
        active_rx, active_tx = _pair(ctx, "active")
        loop.add_reader(active_rx, received.append)
        return idle, active_tx

    idle, active_tx = loop.call(setup)
    loop.call(lambda: None)  # the new readers' first look
    before = loop.call(lambda: [rx.events_read for rx, _ in idle])
    for i in range(50):
        loop.call(active_tx.send, str(i).encode())
        assert eventually(lambda i=i: len(received) == i + 1, WAIT, poll=0.001)
    # Fifty turns with traffic on one socket looked at none of the 200 idle ones.
    assert loop.call(lambda: [rx.events_read for rx, _ in idle]) == before
    assert min(before) >= 1  # each was looked at once, when it was added
    for _, tx in idle:
        loop.call(tx.close)


@pytest.mark.parametrize("mark", ["sent_on", "recheck"])
def test_a_message_whose_signal_a_send_took_is_still_read(unswept_loop, ctx, mark):
    """A send processes the socket's pending commands, the arrival of a message
    among them, so its descriptor stays quiet: ``sent_on`` keeps it from waiting
    (and ``recheck``, which is ``sent_on`` in the loop thread)."""
    loop, received = unswept_loop, []
    rx, peer = loop.call(_pair, ctx, "sent-on")
    loop.call(loop.add_reader, rx, received.append)
    loop.call(lambda: None)  # a turn found rx empty: the next arrival signals
    inside, arrived = threading.Event(), threading.Event()

    def send_after_the_arrival():
        inside.set()
        arrived.wait(WAIT)
        # libzmq looks at a socket's commands on send at most once a millisecond
        # or so (a TSC throttle): let that pass, so this send does look.
        time.sleep(0.01)
        rx.send(b"request")  # takes the arrival's signal
        getattr(loop, mark)(rx)

    loop.submit(send_after_the_arrival)
    assert inside.wait(WAIT)
    peer.send(b"answer")  # while the loop is busy in the task above
    arrived.set()
    assert eventually(lambda: received == [[b"answer"]], WAIT, poll=0.005)
    assert loop.call(lambda: peer.recv(zmq.NOBLOCK)) == b"request"
    loop.call(peer.close)


def test_after_reading_waits_for_the_turns_end_in_the_loop_thread_only(loop):
    order: list[str] = []
    loop.after_reading(order.append, "elsewhere")  # not the loop thread: at once
    assert order == ["elsewhere"]

    def task():
        loop.after_reading(order.append, "turn end")
        order.append("task")

    loop.call(task)
    assert eventually(lambda: order == ["elsewhere", "task", "turn end"], WAIT)


def test_a_recheck_in_the_loop_thread_leaves_the_look_to_the_turn(unswept_loop, ctx):
    """Sends from the loop thread (a DONE's callback sending queued fanout copies)
    ask no ZMQ_EVENTS each: the turn looks once, before the loop waits again."""
    loop, received = unswept_loop, []

    def setup():
        rx = ctx.socket(zmq.PAIR, socket_class=_CountingSocket)
        rx.bind("inproc://recheck-in-loop")
        peer = ctx.socket(zmq.PAIR)
        peer.connect("inproc://recheck-in-loop")
        loop.add_reader(rx, received.append)
        return rx, peer

    rx, peer = loop.call(setup)
    loop.call(lambda: None)  # the new reader's first look

    def send_three():
        before = rx.events_read
        for _ in range(3):
            rx.send(b"request")
            loop.recheck(rx)
        return rx.events_read - before

    assert loop.call(send_three) == 0
    assert loop.call(lambda: [peer.recv(), peer.recv(), peer.recv()]) == [b"request"] * 3
    peer.send(b"answer")
    assert eventually(lambda: received == [[b"answer"]], WAIT, poll=0.005)
    loop.call(peer.close)


@pytest.mark.parametrize(
    "hand_over, expected",
    [
        # An answer handed over while a batch is read goes out before the next request
        # is read (it would otherwise wait behind up to a whole batch).
        ("submit", ["0", "after 0", "1", "after 1", "2", "after 2"]),
        # Work that wakes other threads waits until the loop is done reading.
        ("at_turn_end", ["0", "1", "2", "after 0", "after 1", "after 2"]),
    ],
)
def test_work_handed_over_while_reading_runs_in_its_order(loop, ctx, hand_over, expected):
    order: list[str] = []

    def on_message(frames):
        order.append(frames[0].decode())
        # As an executor thread finishing a request would (here from the loop itself).
        getattr(loop, hand_over)(order.append, f"after {frames[0].decode()}")

    def setup():
        rx, tx = _pair(ctx, f"requests-{hand_over}")
        for i in range(3):  # queued before the reader exists: one turn reads all three
            tx.send(str(i).encode())
        loop.add_reader(rx, on_message)
        return tx

    sender = loop.call(setup)
    assert eventually(lambda: len(order) == 6, WAIT, poll=0.005)
    assert order == expected
    loop.call(sender.close)


def test_work_for_the_turns_end_from_a_task_runs_without_waiting_for_an_event(unswept_loop):
    done = threading.Event()
    unswept_loop.call(unswept_loop.at_turn_end, done.set)
    assert done.wait(WAIT)  # the loop, with nothing to read, sleeps up to an hour otherwise


# -- stop ------------------------------------------------------------------------------


def test_stop_closes_registered_sockets_and_ends_the_thread(ctx):
    loop = IoLoop(NativeRuntime(), name="test-io-stop")
    thread = _thread_named("test-io-stop")
    receiver, sender = loop.call(_pair, ctx, "stop")
    other, other_sender = loop.call(_pair, ctx, "stop-other")
    loop.call(loop.add_reader, receiver, lambda frames: None)
    loop.call(loop.add_reader, other, lambda frames: None)
    loop.call(sender.close)
    loop.call(other_sender.close)
    assert thread.is_alive()

    loop.stop()

    assert receiver.closed
    assert other.closed
    assert not thread.is_alive()
    loop.stop()  # a second stop is a no-op


def test_submit_and_call_after_stop_raise_loop_stopped():
    loop = IoLoop(NativeRuntime(), name="test-io-stopped")
    loop.stop()
    with pytest.raises(LoopStopped):
        loop.submit(lambda: None)
    with pytest.raises(LoopStopped):
        loop.call(lambda: None)


def test_tasks_queued_before_stop_still_run():
    loop = IoLoop(NativeRuntime(), name="test-io-drain")
    ran = []
    release = threading.Event()
    loop.submit(release.wait, WAIT)  # hold the loop so the next tasks queue up
    for i in range(10):
        loop.submit(ran.append, i)
    release.set()
    loop.stop()
    assert ran == list(range(10))


def test_work_for_the_turns_end_queued_by_the_last_tasks_still_runs():
    loop = IoLoop(NativeRuntime(), name="test-io-drain-turn-end")
    ran = []
    release = threading.Event()
    loop.submit(release.wait, WAIT)
    loop.submit(lambda: loop.at_turn_end(ran.append, "woken"))  # a caller's answer, say
    release.set()
    loop.stop()
    assert ran == ["woken"]


def test_calls_racing_with_stop_run_or_raise_loop_stopped_never_time_out():
    # Many callers keep calling while the loop stops: each call must either
    # run or fail with LoopStopped, never sit in the queue until its timeout.
    loop = IoLoop(NativeRuntime(), name="test-io-race")
    outcomes: list[object] = []
    start = threading.Barrier(9)

    def caller():
        start.wait(WAIT)
        while True:
            try:
                outcomes.append(loop.call(lambda: "ran", timeout=5))
            except LoopStopped as exc:
                outcomes.append(exc)
                return
            except Exception as exc:  # TimeoutError would mean a lost task
                outcomes.append(exc)
                return

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    start.wait(WAIT)
    loop.stop()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)
    bad = [o for o in outcomes if o != "ran" and not isinstance(o, LoopStopped)]
    assert not bad, bad
    assert sum(isinstance(o, LoopStopped) for o in outcomes) == 8


# -- green runtime (eventlet), in a process of its own ---------------------------------

GREEN_SCRIPT = textwrap.dedent(
    """
    import eventlet

    eventlet.monkey_patch()

    import zmq
    from eventlet import patcher, queue

    from zmqdriver.eventloop import IoLoop, runtime_for_process
    from zmqdriver.eventloop.green import GreenRuntime

    real_time = patcher.original("time")
    real_threading = patcher.original("threading")
    WAIT = 10.0

    runtime = runtime_for_process()
    assert isinstance(runtime, GreenRuntime), runtime
    loop = IoLoop(runtime, name="green-io")

    ticks = [0]

    def count():
        while True:
            ticks[0] += 1
            eventlet.sleep(0.001)

    counter = eventlet.spawn(count)

    # call() returns results, and the loop is a real OS thread.
    assert loop.call(lambda: 6 * 7) == 42
    assert loop.call(real_threading.get_ident) != real_threading.get_ident()

    # While a call waits for a task that blocks the loop thread natively, the
    # hub keeps running other greenthreads: the counter advances meanwhile.
    def block_loop_until_counter_moves():
        start = ticks[0]
        deadline = real_time.monotonic() + WAIT
        while ticks[0] - start < 20 and real_time.monotonic() < deadline:
            real_time.sleep(0.001)
        return ticks[0] - start

    assert loop.call(block_loop_until_counter_moves) >= 20

    # Exceptions come back to the calling greenthread.
    class Boom(Exception):
        pass

    def fail():
        raise Boom("green")

    try:
        loop.call(fail)
    except Boom as exc:
        assert str(exc) == "green"
    else:
        raise AssertionError("call() did not raise")

    # Many greenthreads calling at once all get their own answer.
    pool = eventlet.GreenPool(50)
    results = list(pool.imap(lambda i: loop.call(lambda: i * 2), range(200)))
    assert results == [i * 2 for i in range(200)], results

    # A reader hands messages to a green queue through the runtime.
    ctx = zmq.Context()
    inbox = queue.Queue()

    def setup():
        receiver = ctx.socket(zmq.PAIR)
        receiver.bind("inproc://green")
        sender = ctx.socket(zmq.PAIR)
        sender.connect("inproc://green")
        loop.add_reader(receiver, lambda frames: runtime.deliver(inbox.put, frames))
        return sender

    sender = loop.call(setup)
    loop.submit(sender.send_multipart, [b"hello", b"green"])
    assert inbox.get(timeout=WAIT) == [b"hello", b"green"]
    loop.call(sender.close)

    # Locks the loop thread shares with callers are the OS's, not green ones.
    from zmqdriver.eventloop import native_lock
    from zmqdriver.rpc.outbox import Suspects

    green_lock_type = type(real_threading.Lock()) is not type(__import__("threading").Lock())
    assert green_lock_type, "monkey patching did not make threading.Lock green"
    assert type(native_lock()) is type(real_threading.Lock()), type(native_lock())
    assert type(Suspects()._lock) is type(real_threading.Lock()), type(Suspects()._lock)

    loop.stop()
    runtime.close()
    counter.kill()
    ctx.term()
    print("OK")
    """
)


def test_green_runtime_keeps_the_hub_running():
    result = subprocess.run(
        [sys.executable, "-c", GREEN_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1:] == ["OK"], result.stdout + result.stderr
