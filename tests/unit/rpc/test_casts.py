"""The CastKeeper in-process: windows, held casts, resends, fanout, through a fake outbox."""

from __future__ import annotations

import logging
import threading
import time

import oslo_messaging
import pytest

from tests.unit.rpc.fakes import (
    A,
    B,
    C,
    Clock,
    FakeOutbox,
    MemoryMatchMaker,
    chooser_for,
    key_of,
    target,
)
from zmqdriver import metrics, protocol
from zmqdriver.addressing import Endpoint
from zmqdriver.exceptions import BackendError, BackendUnavailable
from zmqdriver.rpc import casts
from zmqdriver.rpc import outbox as outbox_module
from zmqdriver.rpc.casts import Cast, CastKeeper, CastLimits
from zmqdriver.rpc.outbox import SUSPECT_FOR

ACK, DONE, REJECT = protocol.Kind.ACK, protocol.Kind.DONE, protocol.Kind.REJECT
RETRY_HELD = casts.RETRY_HELD_EVERY
LIMITS = CastLimits(hold_time=30.0, hold_max=4, track_max=100, window=2, ack_timeout=1.0)


class Keeper:
    """A keeper wired to fakes; the test runs its background work by hand."""

    def __init__(self, limits: CastLimits = LIMITS) -> None:
        self.clock = Clock()
        self.outbox = FakeOutbox(self.clock)
        self.matchmaker = MemoryMatchMaker()
        self.started: list = []
        self.chooser = chooser_for(self.matchmaker, self.outbox, self.clock)
        self.keeper = CastKeeper(
            outbox=self.outbox,
            chooser=self.chooser,
            limits=limits,
            start_background=self.started.append,
            clock=self.clock,
        )
        self.target = target()
        self.key = key_of(self.target)

    def cast(self, n: int = 0, retry: int | None = None, tgt=None) -> Cast:
        tgt = tgt or self.target
        cast = Cast(tgt, key_of(tgt), protocol.new_msg_id(), [b"frame"], retry=retry)
        if tgt.fanout:
            self.keeper.fanout(cast)
        else:
            self.keeper.cast(cast)
        return cast

    def close(self) -> None:
        """Close the keeper as the driver does, its background work running."""
        for work in self.started:
            threading.Thread(target=work, daemon=True).start()
        self.keeper.close()

    def later(self, seconds: float) -> None:
        """Let time pass and the background work run."""
        self.clock.advance(seconds)
        self.keeper.run_pending()


@pytest.fixture
def k() -> Keeper:
    return Keeper()


# -- sending and DONE -------------------------------------------------------------------


def test_a_cast_goes_to_a_registered_server_and_is_forgotten_at_its_done(k):
    k.matchmaker.serve(k.key, A)
    cast = k.cast()
    assert k.outbox.sent == [(A, cast.msg_id)]
    assert cast.msg_id in k.outbox.waiters
    k.outbox.answer(A, cast.msg_id, DONE)
    assert cast.msg_id not in k.outbox.waiters
    k.later(60.0)
    assert k.outbox.sent == [(A, cast.msg_id)]  # nothing sent again
    assert k.outbox.dropped == []


def test_casts_take_turns_between_servers(k):
    k.matchmaker.serve(k.key, A, B)
    for _ in range(4):
        k.cast()
    assert [server for server, _ in k.outbox.sent] == [A, B, A, B]


def test_the_background_work_starts_once(k):
    k.matchmaker.serve(k.key, A)
    k.cast()
    k.cast()
    assert len(k.started) == 1


def test_concurrent_first_casts_start_one_background_thread():
    starts = []

    def slow_start(work):
        time.sleep(0.02)  # widens the window two unlocked starters would race in
        starts.append(work)

    outbox, matchmaker = FakeOutbox(), MemoryMatchMaker()
    keeper = CastKeeper(
        outbox=outbox,
        chooser=chooser_for(matchmaker, outbox),
        limits=CastLimits(hold_time=30.0, hold_max=100, track_max=100, window=100, ack_timeout=1),
        start_background=slow_start,
    )
    tgt = target()
    matchmaker.serve(key_of(tgt), A)
    barrier = threading.Barrier(8)

    def first_cast():
        barrier.wait()
        keeper.cast(Cast(tgt, key_of(tgt), protocol.new_msg_id(), [b"x"]))

    threads = [threading.Thread(target=first_cast) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(starts) == 1
    assert len(outbox.sent) == 8


# -- windows ----------------------------------------------------------------------------


def test_a_full_window_holds_the_caller_until_a_done_makes_room(k):
    k.matchmaker.serve(k.key, A)
    first, second = k.cast(), k.cast()
    third_sent = threading.Event()
    thread = threading.Thread(target=lambda: (k.cast(), third_sent.set()))
    thread.start()
    assert not third_sent.wait(0.2)  # window = 2: the third waits
    assert len(k.outbox.sent) == 2
    k.outbox.answer(A, first.msg_id, ACK)
    assert not third_sent.wait(0.1)  # an ACK does not free the window: only a DONE does
    k.outbox.answer(A, second.msg_id, DONE)
    assert third_sent.wait(10)
    thread.join(10)
    assert len(k.outbox.sent) == 3


def test_a_caller_waiting_for_room_is_woken_once_the_loop_is_done_reading(monkeypatch):
    # Woken at the first DONE of a batch, the caller would preempt the loop only
    # to wait for the GIL the loop holds while it reads the rest; woken once the
    # turn ends, a DONE that frees one place is enough.
    monkeypatch.setattr(casts, "_ROOM_WAIT", 30.0)  # no periodic re-check within the test
    limits = CastLimits(hold_time=30.0, hold_max=4, track_max=100, window=4, ack_timeout=1.0)
    k = Keeper(limits)
    turn_end: list = []
    k.outbox.after_reading = turn_end.append  # the loop's turn goes on until the test ends it
    k.matchmaker.serve(k.key, A)
    window = [k.cast() for _ in range(4)]
    sent = threading.Event()
    thread = threading.Thread(target=lambda: (k.cast(), sent.set()))
    thread.start()
    assert not sent.wait(0.2)
    for cast in window[:3]:  # one DONE message for three casts
        k.outbox.answer(A, cast.msg_id, DONE)
    assert not sent.wait(0.2)  # room, but the loop is still reading
    assert len(turn_end) == 1  # one wake-up for the whole batch
    turn_end.pop()()
    assert sent.wait(10)
    thread.join(10)
    assert len(k.outbox.sent) == 5
    # One place free is enough: the next caller goes on after a one-DONE turn.
    k.cast(), k.cast()  # the window (4) is full again
    sent.clear()
    thread = threading.Thread(target=lambda: (k.cast(), sent.set()))
    thread.start()
    assert not sent.wait(0.2)
    k.outbox.answer(A, window[3].msg_id, DONE)
    turn_end.pop()()
    assert sent.wait(10)
    thread.join(10)


def test_the_process_wide_limit_holds_casts_to_every_server():
    limits = CastLimits(hold_time=30.0, hold_max=4, track_max=2, window=10, ack_timeout=1.0)
    k = Keeper(limits)
    k.matchmaker.serve(k.key, A, B)
    first, _ = k.cast(), k.cast()
    sent = threading.Event()
    thread = threading.Thread(target=lambda: (k.cast(), sent.set()))
    thread.start()
    assert not sent.wait(0.2)
    k.outbox.answer(A, first.msg_id, DONE)
    assert sent.wait(10)
    thread.join(10)


def test_close_releases_a_caller_waiting_for_room(k):
    k.matchmaker.serve(k.key, A)
    k.cast(), k.cast()
    thread = threading.Thread(target=k.cast)
    thread.start()
    k.close()
    thread.join(10)
    assert not thread.is_alive()


def test_a_long_wait_for_room_is_logged(caplog):
    limits = CastLimits(hold_time=30.0, hold_max=4, track_max=100, window=1, ack_timeout=0.1)
    k = Keeper(limits)
    k.matchmaker.serve(k.key, A)
    first = k.cast()
    thread = threading.Thread(target=k.cast)
    with caplog.at_level(logging.WARNING, logger="zmqdriver.rpc.casts"):
        thread.start()
        deadline = time.monotonic() + 10
        while "waited" not in caplog.text and time.monotonic() < deadline:
            k.clock.advance(1.0)  # past 2 x ack_timeout on the keeper's clock
            time.sleep(0.05)
        k.outbox.answer(A, first.msg_id, DONE)
        thread.join(10)
    assert "has waited" in caplog.text and "zmq_cast_window=1" in caplog.text


# -- resends ----------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["lost", "reject"])
def test_a_cast_whose_server_is_lost_or_stopping_goes_to_another(k, failure):
    k.matchmaker.serve(k.key, A, B)
    cast = k.cast()
    assert k.outbox.sent == [(A, cast.msg_id)]
    if failure == "lost":
        k.outbox.lose(A)
    else:
        k.outbox.answer(A, cast.msg_id, REJECT)
    k.later(0.0)
    assert k.outbox.sent == [(A, cast.msg_id), (B, cast.msg_id)]  # same id: B can de-duplicate
    assert cast.tried == {A}
    k.outbox.answer(B, cast.msg_id, DONE)
    assert cast.msg_id not in k.outbox.waiters


def test_a_lost_server_is_logged_once_per_outage_not_per_cast(k, caplog):
    k.matchmaker.serve(k.key, A)
    first = [k.cast(), k.cast()]  # A's window: 2
    with caplog.at_level(logging.DEBUG, logger="zmqdriver.rpc.casts"):
        k.outbox.lose(A)
        k.later(RETRY_HELD)  # held (A was tried), then sent to A again
        k.outbox.lose(A)
        k.outbox.reconnect(A, handshake=False)  # a flapping connection, not a dead server
        k.later(RETRY_HELD)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(A) in warnings[0].getMessage()
    assert caplog.text.count("was lost before running it") == 4  # the rest at DEBUG
    for cast in first:
        k.outbox.answer(A, cast.msg_id, DONE)  # A is back: a later loss is a new outage
    k.cast()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zmqdriver.rpc.casts"):
        k.outbox.lose(A)
    assert len(caplog.records) == 1


def test_a_silent_server_loses_its_connection_and_its_casts_go_elsewhere(k):
    k.matchmaker.serve(k.key, A, B)
    on_a = [k.cast(), k.cast(), k.cast()][::2]  # A, B, A
    k.later(0.5)
    assert k.outbox.dropped == []
    k.outbox.answer(B, k.outbox.sent[1][1], ACK)  # B acknowledges; A stays silent
    k.later(0.6)  # past ack_timeout (1 s)
    assert k.outbox.dropped == [A]  # once, though two casts were silent
    k.later(0.0)
    resent = [msg_id for server, msg_id in k.outbox.sent[3:]]
    assert sorted(resent) == sorted(c.msg_id for c in on_a)
    assert all(server == B for server, _ in k.outbox.sent[3:])
    for msg_id in resent:
        k.outbox.answer(B, msg_id, ACK)
    k.later(2.0)
    assert k.outbox.dropped == [A]  # B acknowledged everything: never dropped for silence


def test_an_acknowledged_cast_is_not_dropped_for_silence(k):
    k.matchmaker.serve(k.key, A)
    cast = k.cast()
    k.outbox.answer(A, cast.msg_id, ACK)
    k.later(5.0)
    assert k.outbox.dropped == []


def test_resends_stop_after_retry_attempts(k, caplog):
    k.matchmaker.serve(k.key, A, B)
    cast = k.cast(retry=1)
    k.outbox.lose(A)
    k.later(0.0)
    k.outbox.lose(B)
    with caplog.at_level(logging.ERROR, logger="zmqdriver.rpc.casts"):
        k.later(0.0)
    assert len(k.outbox.sent) == 2
    assert f"cast {protocol.msg_id_str(cast.msg_id)}" in caplog.text
    assert "no server took it in 2 attempts (retry=1)" in caplog.text


def test_a_cast_with_every_server_tried_goes_round_again(k):
    k.matchmaker.serve(k.key, A)
    cast = k.cast()
    k.outbox.lose(A)
    k.later(0.0)  # A is tried, nobody else: held
    k.later(1.0)  # the held cast is retried; every server failed once: A again
    assert [server for server, _ in k.outbox.sent] == [A, A]
    assert cast.attempts == 2


def test_a_cast_for_a_killed_server_is_held_not_sent_until_it_is_reached_again(k):
    k.matchmaker.serve(k.key, A)  # A's record outlives A by up to zmq_target_expire
    cast = k.cast()
    k.outbox.kill(A)
    for _ in range(10):
        k.later(RETRY_HELD)
    assert k.outbox.sent_to(A) == [cast.msg_id]  # held: a send would only be refused
    k.outbox.reconnect(A)  # back on the same address
    k.later(RETRY_HELD)
    assert k.outbox.sent_to(A) == [cast.msg_id, cast.msg_id]


def test_casts_avoid_a_server_whose_connection_stays_down_after_its_suspicion_expired(k):
    k.matchmaker.serve(k.key, A, B)  # A's record outlives its host by up to zmq_target_expire
    k.outbox.lose(A)
    k.clock.advance(SUSPECT_FOR + 1)
    for _ in range(LIMITS.window):
        k.cast()
    assert [server for server, _ in k.outbox.sent] == [B] * LIMITS.window  # none held


def test_suspect_servers_are_the_last_resort(k):
    k.matchmaker.serve(k.key, A, B)
    k.outbox.suspects.mark(A)
    for _ in range(LIMITS.window):
        k.cast()
    assert [server for server, _ in k.outbox.sent] == [B] * LIMITS.window


def test_a_stale_copy_is_forgotten(k):
    k.matchmaker.serve(k.key, A)
    cast = k.cast()
    k.outbox.answer(A, cast.msg_id, ACK)
    k.later(casts.FORGET_AFTER + 1)
    assert cast.msg_id not in k.outbox.waiters


def test_the_keeper_goes_on_after_a_failing_round(caplog):
    k = Keeper()
    k.matchmaker.serve(k.key, A, B)
    cast = k.cast()
    k.outbox.lose(A)

    def broken_send(server, msg_id):
        raise RuntimeError("plugin bug")

    k.outbox.on_send = broken_send
    k.keeper._start_background = lambda work: None
    stop = threading.Thread(target=k.keeper._serve)
    with caplog.at_level(logging.ERROR, logger="zmqdriver.rpc.casts"):
        k.keeper._resends.put(cast)  # what _redirect queues
        stop.start()
        deadline = time.monotonic() + 10
        while "failed a round" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)
        k.keeper.close()
        stop.join(10)
    assert "failed a round" in caplog.text
    assert any(r.exc_info and "plugin bug" in str(r.exc_info[1]) for r in caplog.records)


# -- a server that refuses our CURVE key ----------------------------------------------

REFUSAL = "the server refused this client's CURVE key K (ZAP status 400); add it"


def test_casts_refused_by_a_server_are_held_said_once_and_sent_when_allowed(k, caplog):
    k.matchmaker.serve(k.key, A)
    casts_ = [k.cast(), k.cast()]
    with caplog.at_level(logging.WARNING, logger="zmqdriver.rpc.casts"):
        k.outbox.lose(A, REFUSAL, refused=True)
        k.later(0.0)  # A, the only server, was tried: held, then retried on A...
        k.later(RETRY_HELD)
        assert sorted(m for _, m in k.outbox.sent[2:4]) == sorted(c.msg_id for c in casts_)
        k.outbox.lose(A, REFUSAL, refused=True)  # ...and refused again
        k.later(RETRY_HELD)
        k.later(RETRY_HELD)
        assert len(k.outbox.sent) > 4  # still retried
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1 and caplog.records[0].levelno == logging.ERROR
    assert f"Server {A} refused this client's CURVE key" in errors[0]
    assert REFUSAL in errors[0] and "zmq_cast_hold_time" in errors[0]
    # The operator allowed the key: the next retry runs them.
    for cast in casts_:
        k.outbox.answer(A, cast.msg_id, DONE)
    assert all(cast.msg_id not in k.outbox.waiters for cast in casts_)


def test_refused_casts_are_dropped_with_a_count_after_the_hold_time(k, caplog):
    k.matchmaker.serve(k.key, A)
    k.cast()
    k.outbox.lose(A, REFUSAL, refused=True)
    with caplog.at_level(logging.ERROR, logger="zmqdriver.rpc.casts"):
        for _ in range(int(LIMITS.hold_time / RETRY_HELD) + 2):
            k.later(RETRY_HELD)
            k.outbox.lose(A, REFUSAL, refused=True)
    assert "Dropped 1 casts that no server took within zmq_cast_hold_time" in caplog.text


def test_a_refused_fanout_copy_is_dropped_and_said_once(k, caplog):
    fan = target(fanout=True)
    k.matchmaker.serve(key_of(fan), A, B)
    with caplog.at_level(logging.WARNING, logger="zmqdriver.rpc.casts"):
        first, second = k.cast(tgt=fan), k.cast(tgt=fan)
        for cast in (first, second):
            k.outbox.answer(B, cast.msg_id, ACK)
        k.outbox.lose(A, REFUSAL, refused=True)
        k.later(5.0)
    assert len(k.outbox.sent) == 4  # never resent, to A or to B
    assert len(caplog.records) == 1 and "fanout copies to it are dropped" in caplog.text
    for cast in (first, second):
        k.outbox.answer(B, cast.msg_id, DONE)
        assert cast.msg_id not in k.outbox.waiters


# -- held casts -------------------------------------------------------------------------


def test_casts_to_a_target_without_servers_are_held_and_sent_in_order(k):
    first, second = k.cast(), k.cast()
    assert k.outbox.sent == []
    k.matchmaker.serve(k.key, A)
    k.later(casts.RETRY_HELD_EVERY)  # the cache still says "nobody": a fresh look finds A
    assert [msg_id for _, msg_id in k.outbox.sent] == [first.msg_id, second.msg_id]


def test_a_cast_queues_behind_held_casts_to_its_target(k):
    held = k.cast()
    k.matchmaker.serve(k.key, A)
    later = k.cast()  # A exists now, but an earlier cast waits: keep order
    assert k.outbox.sent == []
    k.later(casts.RETRY_HELD_EVERY)
    assert [msg_id for _, msg_id in k.outbox.sent] == [held.msg_id, later.msg_id]


def test_held_casts_of_another_target_do_not_block(k):
    other = target("other")
    k.cast(tgt=other)
    k.matchmaker.serve(k.key, A)
    cast = k.cast()
    assert k.outbox.sent == [(A, cast.msg_id)]


def test_a_full_hold_refuses_the_caller(k, caplog):
    for _ in range(LIMITS.hold_max):
        k.cast()
    with pytest.raises(oslo_messaging.MessageDeliveryFailure, match="zmq_cast_hold_max"):
        k.cast()
    assert "4 casts already held (zmq_cast_hold_max); refusing more" in caplog.text


def test_held_casts_past_the_hold_time_are_dropped_with_a_count(k, caplog):
    k.cast(), k.cast()
    with caplog.at_level(logging.ERROR, logger="zmqdriver.rpc.casts"):
        k.later(LIMITS.hold_time + 1)
    assert "Dropped 2 casts" in caplog.text
    k.matchmaker.serve(k.key, A)
    k.later(casts.RETRY_HELD_EVERY)
    assert k.outbox.sent == []


def test_a_matchmaker_outage_holds_the_cast(k):
    k.matchmaker.failure = BackendUnavailable("redis down")
    k.cast()
    assert k.outbox.sent == []
    k.matchmaker.failure = None
    k.matchmaker.serve(k.key, A)
    k.later(casts.RETRY_HELD_EVERY)
    assert len(k.outbox.sent) == 1


def test_a_refusing_matchmaker_fails_the_caller_at_once(k):
    k.matchmaker.failure = BackendError("wrong password")
    with pytest.raises(BackendError, match="wrong password"):
        k.cast()


def test_a_resend_meeting_a_refusing_matchmaker_holds_the_cast(k):
    k.matchmaker.serve(k.key, A)
    k.later(0.0)  # the next retry of held casts is RETRY_HELD_EVERY away
    cast = k.cast()
    k.matchmaker.failure = BackendError("wrong password")
    k.keeper._chooser.failed(k.key)  # no cached answer to fall back on
    k.outbox.lose(A)
    k.later(0.0)
    assert len(k.outbox.sent) == 1  # held, not lost
    k.matchmaker.failure = None
    k.later(casts.RETRY_HELD_EVERY)
    assert k.outbox.sent[-1] == (A, cast.msg_id)


def test_a_resend_finding_the_hold_full_is_logged(caplog):
    limits = CastLimits(hold_time=30.0, hold_max=1, track_max=100, window=10, ack_timeout=1.0)
    k = Keeper(limits)
    other = target("other")
    k.cast(tgt=other)  # fills the hold
    k.matchmaker.serve(k.key, A)
    cast = k.cast()
    k.matchmaker.leave(k.key, A)
    k.outbox.lose(A)
    with caplog.at_level(logging.ERROR, logger="zmqdriver.rpc.casts"):
        k.keeper._chooser.failed(k.key)
        k.later(0.0)
    assert "zmq_cast_hold_max" in caplog.text
    assert cast.msg_id not in k.outbox.waiters


def test_held_casts_keep_their_place_when_callers_fill_the_hold_during_a_retry(k, caplog):
    """A retry takes the held casts out, and puts back those that still find no server:
    casts that callers held in between must not push them out (their cast() returned)."""
    first, second = k.cast(), k.cast()  # no server: held
    resend = k.keeper._resend

    def callers_fill_the_hold(cast, *args, **kwargs):
        while len(k.keeper._held) < LIMITS.hold_max:  # other threads, another target
            k.cast(tgt=target("other"))
        resend(cast, *args, **kwargs)

    k.keeper._resend = callers_fill_the_hold
    with caplog.at_level(logging.WARNING, logger="zmqdriver.rpc.casts"):
        k.later(casts.RETRY_HELD_EVERY)
    assert {first.msg_id, second.msg_id} <= set(k.keeper._held)
    assert "dropped" not in caplog.text.lower()


def test_a_cast_made_while_held_casts_are_retried_waits_behind_them(k):
    held = k.cast()  # no server yet: held
    k.matchmaker.serve(k.key, A)
    resend = k.keeper._resend
    made: list[Cast] = []

    def a_caller_casts_meanwhile(cast, *args, **kwargs):
        if not made:
            k.keeper._chooser.failed(k.key)  # its lookup finds A, as the retry's does
            made.append(k.cast())
        return resend(cast, *args, **kwargs)

    k.keeper._resend = a_caller_casts_meanwhile
    k.later(casts.RETRY_HELD_EVERY)
    k.keeper._resend = resend
    k.later(casts.RETRY_HELD_EVERY)
    assert [msg_id for _, msg_id in k.outbox.sent] == [held.msg_id, made[0].msg_id]


def test_closing_with_held_casts_says_they_are_lost(k, caplog):
    k.cast()
    with caplog.at_level(logging.ERROR, logger="zmqdriver.rpc.casts"):
        k.close()
    assert "1 casts still waiting" in caplog.text


# -- fanout -----------------------------------------------------------------------------


def test_fanout_sends_a_copy_to_every_server_and_waits_for_every_done(k):
    fan = target(fanout=True)
    k.matchmaker.serve(key_of(fan), A, B, C)
    cast = k.cast(tgt=fan)
    assert sorted(server for server, _ in k.outbox.sent) == [A, B, C]
    k.outbox.answer(A, cast.msg_id, DONE)
    k.outbox.answer(B, cast.msg_id, DONE)
    assert cast.msg_id in k.outbox.waiters
    k.outbox.answer(C, cast.msg_id, DONE)
    assert cast.msg_id not in k.outbox.waiters


def test_a_lost_fanout_copy_is_never_sent_to_another_server(k, caplog):
    fan = target(fanout=True)
    k.matchmaker.serve(key_of(fan), A, B)
    k.cast(tgt=fan)
    with caplog.at_level(logging.WARNING, logger="zmqdriver.rpc.casts"):
        k.outbox.lose(A)
        k.later(5.0)
    assert len(k.outbox.sent) == 2
    assert "fanout" in caplog.text and "before running it" in caplog.text


def test_a_fanout_copy_its_paused_server_refused_goes_to_that_server_again(k):
    fan = target(fanout=True)
    k.matchmaker.serve(key_of(fan), A, B)
    cast = k.cast(tgt=fan)
    k.outbox.answer(A, cast.msg_id, REJECT)  # A fences itself after a pause of its process
    k.outbox.answer(B, cast.msg_id, DONE)
    k.later(casts.FANOUT_AGAIN_AFTER / 2)
    assert k.outbox.sent_to(A) == [cast.msg_id]
    k.later(casts.FANOUT_AGAIN_AFTER / 2)
    assert k.outbox.sent_to(A) == [cast.msg_id, cast.msg_id]  # same id: run once however sent
    assert k.outbox.sent_to(B) == [cast.msg_id]
    k.outbox.answer(A, cast.msg_id, DONE)
    assert cast.msg_id not in k.outbox.waiters


def test_a_fanout_copy_refused_by_a_server_that_left_is_dropped(k, caplog):
    fan = target(fanout=True)
    k.matchmaker.serve(key_of(fan), A, B)
    cast = k.cast(tgt=fan)
    k.matchmaker.leave(key_of(fan), A)  # a stopping server unregisters, then REJECTs
    with caplog.at_level(logging.INFO, logger="zmqdriver.rpc.casts"):
        k.outbox.answer(A, cast.msg_id, REJECT)
        k.later(casts.FANOUT_AGAIN_AFTER)
    assert k.outbox.sent_to(A) == [cast.msg_id]
    assert "no longer registered" in caplog.text


def test_a_fanout_copy_refused_for_longer_than_the_hold_time_is_dropped(k, caplog):
    fan = target(fanout=True)
    k.matchmaker.serve(key_of(fan), A)
    cast = k.cast(tgt=fan)
    with caplog.at_level(logging.ERROR, logger="zmqdriver.rpc.casts"):
        while "dropped" not in caplog.text and len(k.outbox.sent) < 1000:
            k.outbox.answer(A, cast.msg_id, REJECT)
            k.later(casts.FANOUT_AGAIN_AFTER * 10)
    assert "refused it for zmq_cast_hold_time" in caplog.text
    assert len(k.outbox.sent) <= LIMITS.hold_time / (casts.FANOUT_AGAIN_AFTER * 10) + 2


def test_a_late_fanout_copy_alone_keeps_its_connection(k, caplog):
    fan = target(fanout=True)
    k.matchmaker.serve(key_of(fan), A)
    cast = k.cast(tgt=fan)
    with caplog.at_level(logging.WARNING, logger="zmqdriver.rpc.casts"):
        k.later(LIMITS.ack_timeout + casts.TICK)  # A is starved, not dead: no ACK yet
    assert k.outbox.dropped == []  # a drop would only lose the copy
    assert "still waiting for it" in caplog.text
    k.outbox.answer(A, cast.msg_id, DONE)
    assert cast.msg_id not in k.outbox.waiters


def test_fanout_copies_lost_when_a_silent_server_is_dropped_go_to_it_again(k):
    fan = target(fanout=True)
    k.matchmaker.serve(key_of(fan), A)
    k.matchmaker.serve(k.key, A)
    k.cast()  # a directed cast to A: late, it drops A's connection and goes elsewhere
    fanout = k.cast(tgt=fan)
    k.later(LIMITS.ack_timeout + casts.TICK)
    assert k.outbox.dropped == [A]
    k.later(casts.FANOUT_AGAIN_AFTER)
    assert k.outbox.sent_to(A).count(fanout.msg_id) == 2  # same id: A runs it once


def test_fanout_skips_a_killed_server_until_it_is_reached_again(k, caplog):
    fan = target(fanout=True)
    k.matchmaker.serve(key_of(fan), A, B)  # A's record outlives A by up to zmq_target_expire
    k.outbox.on_send = lambda server, msg_id: k.outbox.answer(server, msg_id, DONE)
    k.cast(tgt=fan)
    k.outbox.kill(A)  # reconnecting is refused
    skipped = metrics.snapshot()["fanout_skipped"]
    with caplog.at_level(logging.WARNING, logger="zmqdriver.rpc.casts"):
        later = [k.cast(tgt=fan) for _ in range(3)]
    assert all(cast.msg_id not in k.outbox.sent_to(A) for cast in later)
    assert all(cast.msg_id in k.outbox.sent_to(B) for cast in later)
    assert metrics.snapshot()["fanout_skipped"] - skipped == 3
    assert caplog.text.count(f"Fanout skips {A}") == 1  # once per outage, not per copy
    k.outbox.reconnect(A)  # back on the same address
    back = k.cast(tgt=fan)
    assert k.outbox.sent_to(A)[-1] == back.msg_id


def test_fanout_skips_a_server_whose_host_vanished(k):
    fan = target(fanout=True)
    k.matchmaker.serve(key_of(fan), A, B)
    k.outbox.lose(A)  # heartbeats unanswered, and no reconnection is accepted
    soon = k.cast(tgt=fan)  # within the grace: maybe only stopped, the copy may still arrive
    k.later(outbox_module.RECONNECT_GRACE)
    late = k.cast(tgt=fan)
    assert k.outbox.sent_to(A) == [soon.msg_id]
    assert late.msg_id in k.outbox.sent_to(B)


def test_a_stopped_server_still_gets_its_fanout_copies(k):
    fan = target(fanout=True)
    k.matchmaker.serve(key_of(fan), A)
    k.outbox.lose(A)  # SIGSTOP: heartbeats unanswered
    k.outbox.reconnect(A, handshake=False)  # but its kernel accepts the new connection
    k.later(10 * outbox_module.RECONNECT_GRACE)
    cast = k.cast(tgt=fan)
    assert k.outbox.sent_to(A) == [cast.msg_id]  # waits in the connection until it resumes


def test_a_restarted_server_gets_fanouts_as_soon_as_it_is_seen(k):
    fan = target(fanout=True)
    restarted = Endpoint(A.host, A.port + 100)  # same host, new port: a new record
    k.matchmaker.serve(key_of(fan), A)
    k.cast(tgt=fan)
    k.outbox.kill(A)
    k.matchmaker.serve(key_of(fan), restarted)
    k.chooser.failed(key_of(fan))  # as a pushed change (or the cache's ttl) would
    cast = k.cast(tgt=fan)
    assert k.outbox.sent_to(restarted) == [cast.msg_id]
    assert cast.msg_id not in k.outbox.sent_to(A)


def test_a_fanout_whose_every_server_is_unreachable_sends_and_tracks_nothing(k):
    fan = target(fanout=True)
    k.matchmaker.serve(key_of(fan), A)
    k.outbox.kill(A)
    cast = k.cast(tgt=fan)
    assert k.outbox.sent == []
    assert cast.msg_id not in k.outbox.waiters


def test_a_fanout_copy_refused_by_a_server_killed_since_is_not_sent_again(k, caplog):
    fan = target(fanout=True)
    k.matchmaker.serve(key_of(fan), A)
    cast = k.cast(tgt=fan)
    k.outbox.answer(A, cast.msg_id, REJECT)  # fenced after a pause...
    k.outbox.kill(A)  # ...then killed, its record still there
    with caplog.at_level(logging.INFO, logger="zmqdriver.rpc.casts"):
        k.later(casts.FANOUT_AGAIN_AFTER)
    assert k.outbox.sent_to(A) == [cast.msg_id]
    assert "its connection is down" in caplog.text


def test_fanout_without_servers_is_logged_not_held(k, caplog):
    with caplog.at_level(logging.WARNING, logger="zmqdriver.rpc.casts"):
        k.cast(tgt=target(fanout=True))
    assert "reached no server" in caplog.text
    k.matchmaker.serve(key_of(target(fanout=True)), A)
    k.later(casts.RETRY_HELD_EVERY)
    assert k.outbox.sent == []


def test_a_full_window_holds_up_only_its_own_fanout_copy(k):
    fan = target(fanout=True)
    k.matchmaker.serve(key_of(fan), A, B)  # a fanout's servers are its topic's servers
    first, _, _ = k.cast(), k.cast(), k.cast()  # A, B, A: A's window (2) is full
    fanout = k.cast(tgt=fan)  # returns at once: B gets its copy now, A's waits for room
    assert k.outbox.sent_to(B)[-1] == fanout.msg_id
    assert fanout.msg_id not in k.outbox.sent_to(A)
    k.outbox.answer(B, fanout.msg_id, DONE)
    assert fanout.msg_id in k.outbox.waiters  # A's copy is still to come
    k.outbox.answer(A, first.msg_id, DONE)
    assert k.outbox.sent_to(A)[-1] == fanout.msg_id
    k.outbox.answer(A, fanout.msg_id, DONE)
    assert fanout.msg_id not in k.outbox.waiters


def test_a_queued_fanout_copy_the_loop_sends_at_once_has_its_done_counted(k):
    """Once the caller lets the keeper's lock go, the loop may send the fanout's
    queued copy and read its DONE before the caller goes on: the fanout's responses
    must be expected by then, or that DONE is dropped and the copy never ends."""
    fan = target(fanout=True)
    k.matchmaker.serve(key_of(fan), A, B)
    first, _, _ = k.cast(), k.cast(), k.cast()  # A, B, A: A's window (2) is full
    loop_went, caller = threading.Event(), threading.current_thread()

    def loop():  # a DONE frees room at A: the queued copy goes, and is DONE at once
        k.outbox.answer(A, first.msg_id, DONE)
        loop_went.set()

    def answer_the_loops_sends(server, msg_id):
        if threading.current_thread() is not caller:
            k.outbox.answer(server, msg_id, DONE)

    expect = k.outbox.expect

    def expect_while_the_loop_runs(msg_id, handler=None):
        if msg_id == first.msg_id or loop_went.is_set():
            return expect(msg_id, handler)
        runner = threading.Thread(target=loop)
        runner.start()
        loop_went.wait(0.5)  # it cannot go on while the caller holds the keeper's lock
        waiter = expect(msg_id, handler)
        threads.append(runner)
        return waiter

    threads: list[threading.Thread] = []
    k.outbox.on_send = answer_the_loops_sends
    k.outbox.expect = expect_while_the_loop_runs
    fanout = k.cast(tgt=fan)
    for thread in threads:
        thread.join(10)
    assert loop_went.is_set()
    assert k.outbox.sent_to(A)[-1] == fanout.msg_id  # sent by the loop
    k.outbox.answer(B, fanout.msg_id, DONE)
    assert fanout.msg_id not in k.outbox.waiters  # both copies ended


def test_queued_fanout_copies_go_out_in_order_before_later_casts(k):
    fan = target(fanout=True)
    k.matchmaker.serve(key_of(fan), A)
    first, second = k.cast(), k.cast()  # A's window (2) is full
    fanouts = [k.cast(tgt=fan), k.cast(tgt=fan)]
    later = threading.Thread(target=k.cast)  # a directed cast queues behind them
    later.start()
    for done in (first, second, *fanouts):
        k.outbox.answer(A, done.msg_id, DONE)
    later.join(10)
    assert k.outbox.sent_to(A)[2:4] == [fanout.msg_id for fanout in fanouts]
    assert len(k.outbox.sent_to(A)) == 5


def test_fanout_waits_while_the_process_wide_limit_is_reached():
    k = Keeper(CastLimits(hold_time=30.0, hold_max=4, track_max=3, window=2, ack_timeout=1.0))
    fan = target(fanout=True)
    k.matchmaker.serve(key_of(fan), A, B)
    k.cast(), k.cast()  # A, B
    k.cast(tgt=fan)  # 2 on their way + 2 copies: the limit (3) is passed once, not refused
    sent = threading.Event()
    thread = threading.Thread(target=lambda: (k.cast(tgt=fan), sent.set()))
    thread.start()
    assert not sent.wait(0.2)
    for server, msg_id in list(k.outbox.sent):
        k.outbox.answer(server, msg_id, DONE)
    assert sent.wait(10)
    thread.join(10)


def test_closing_with_queued_fanout_copies_says_they_are_lost(k, caplog):
    fan = target(fanout=True)
    k.matchmaker.serve(key_of(fan), A)
    k.cast(), k.cast()
    k.cast(tgt=fan)
    with caplog.at_level(logging.ERROR, logger="zmqdriver.rpc.casts"):
        k.close()
    assert "1 fanout copies still waiting" in caplog.text
