"""ServerChooser: lookups, round robin, tried and suspect servers, waiting for a server."""

from __future__ import annotations

import pytest

from tests.unit.rpc.fakes import A, B, C, Clock, FakeOutbox, MemoryMatchMaker, chooser_for
from zmqdriver.exceptions import BackendError, BackendUnavailable
from zmqdriver.rpc.chooser import FanoutServers, NoServer
from zmqdriver.rpc.outbox import RECONNECT_GRACE, SUSPECT_FOR

KEY = "test/rpc/openstack/t"


class Setup:
    def __init__(self) -> None:
        self.clock = Clock()
        self.outbox = FakeOutbox(self.clock)
        self.matchmaker = MemoryMatchMaker()
        self.chooser = chooser_for(self.matchmaker, self.outbox, self.clock)


@pytest.fixture
def s() -> Setup:
    return Setup()


def test_servers_take_turns(s):
    s.matchmaker.serve(KEY, A, B, C)
    chosen = [s.chooser.choose(KEY, set(), s.clock()) for _ in range(6)]
    assert chosen == [A, B, C, A, B, C]


def test_a_server_that_failed_the_request_is_skipped(s):
    s.matchmaker.serve(KEY, A, B)
    assert {s.chooser.choose(KEY, {A}, s.clock()) for _ in range(4)} == {B}


def test_when_every_server_failed_the_request_they_get_another_chance_later(s):
    s.matchmaker.serve(KEY, A, B)
    tried = {A, B}
    with pytest.raises(NoServer):  # not at once: that would spin on a stopping server
        s.chooser.choose(KEY, tried, s.clock())
    assert tried == set()
    assert s.chooser.choose(KEY, tried, s.clock()) in (A, B)


def test_with_time_left_every_server_failed_is_retried_after_a_pause(s):
    s.matchmaker.serve(KEY, A)
    assert s.chooser.choose(KEY, {A}, s.clock() + 5.0) == A
    assert 1000.0 < s.clock() < 1001.0


def test_suspect_servers_are_chosen_only_when_nothing_else_is_left(s):
    s.matchmaker.serve(KEY, A, B)
    s.outbox.suspects.mark(A)
    assert {s.chooser.choose(KEY, set(), s.clock()) for _ in range(4)} == {B}
    assert s.chooser.choose(KEY, {B}, s.clock()) == A


def test_answers_come_from_the_cache_until_a_server_fails(s):
    s.matchmaker.serve(KEY, A)
    s.chooser.choose(KEY, set(), s.clock())
    s.matchmaker.serve(KEY, B)
    assert s.chooser.every_server(KEY) == [A]  # cached
    s.chooser.failed(KEY)
    assert s.chooser.every_server(KEY) == [A, B]


def test_registered_always_asks_the_matchmaker(s):
    s.matchmaker.serve(KEY, A)
    assert s.chooser.every_server(KEY) == [A]
    s.matchmaker.leave(KEY, A)
    assert s.chooser.registered(KEY) == []


def test_no_server_until_the_deadline_raises_noserver(s):
    lookups_before = s.matchmaker.lookups
    with pytest.raises(NoServer) as raised:
        s.chooser.choose(KEY, set(), s.clock() + 2.0)
    assert raised.value.key == KEY and raised.value.detail == ""
    assert s.matchmaker.lookups - lookups_before > 3  # it kept looking, with pauses
    assert s.clock() >= 1002.0


def test_a_deadline_in_the_past_looks_in_the_cache_and_once_afresh(s):
    s.matchmaker.serve(KEY, A)
    s.chooser.every_server(KEY)  # cached: [A]
    s.matchmaker.serve(KEY, B)
    assert s.chooser.choose(KEY, {A}, s.clock()) == B  # found by the fresh look


def test_a_server_registering_while_waiting_is_chosen(s):
    real_sleep = s.chooser._sleep

    def sleep(seconds: float) -> None:
        real_sleep(seconds)
        if s.clock() > 1001.0:
            s.matchmaker.serve(KEY, C)

    s.chooser._sleep = sleep
    assert s.chooser.choose(KEY, set(), s.clock() + 5.0) == C
    assert s.clock() < 1005.0


def test_pauses_between_lookups_grow_and_stay_under_the_cap(s):
    pauses: list[float] = []
    s.chooser._sleep = lambda seconds: (pauses.append(seconds), s.clock.advance(seconds))
    with pytest.raises(NoServer):
        s.chooser.choose(KEY, set(), s.clock() + 3.0)
    assert pauses[0] == pytest.approx(0.05)
    assert pauses == sorted(pauses) or pauses[-1] <= pauses[-2]  # the last is cut at the deadline
    assert max(pauses) <= 0.5


def test_a_matchmaker_outage_is_waited_out_and_named_at_the_deadline(s):
    s.matchmaker.failure = BackendUnavailable("redis down")
    with pytest.raises(NoServer) as raised:
        s.chooser.choose(KEY, set(), s.clock() + 1.0)
    assert raised.value.detail == " (matchmaker: redis down)"


def test_a_matchmaker_refusal_raises_at_once(s):
    s.matchmaker.failure = BackendError("wrong password")
    with pytest.raises(BackendError, match="wrong password"):
        s.chooser.choose(KEY, set(), s.clock() + 30.0)
    assert s.clock() == 1000.0


def test_fanout_wants_every_server_and_none_is_noserver(s):
    with pytest.raises(NoServer):
        s.chooser.every_server(KEY)
    s.matchmaker.serve(KEY, C, A, B)
    assert s.chooser.every_server(KEY) == [A, B, C]


# -- unreachable servers: fanout skips them ------------------------------------------------


def test_fanout_skips_the_servers_whose_connection_is_refused(s):
    s.matchmaker.serve(KEY, A, B, C)
    s.outbox.kill(B)  # its record lives on until it expires
    assert s.chooser.fanout_servers(KEY) == FanoutServers(reachable=[A, C], unreachable=[B])


def test_of_suspect_servers_a_reachable_one_is_chosen_first(s):
    s.matchmaker.serve(KEY, A, B)
    s.outbox.kill(A)
    s.outbox.suspects.mark(B)  # slow, not gone
    assert {s.chooser.choose(KEY, set(), s.clock()) for _ in range(4)} == {B}
    assert s.chooser.choose(KEY, {B}, s.clock()) == A  # calls still try it as a last resort


def test_a_server_unreachable_for_longer_than_a_suspicion_is_still_avoided(s):
    s.matchmaker.serve(KEY, A, B)
    s.outbox.lose(A)  # its host is gone: no reconnection is refused, none succeeds
    s.clock.advance(SUSPECT_FOR + 1)  # the suspicion has expired, the connection is still down
    assert A not in s.outbox.suspects and s.chooser.unreachable(A)
    assert {s.chooser.choose(KEY, set(), s.clock()) for _ in range(4)} == {B}
    s.outbox.suspects.mark(B)  # slow, not gone: still better than a server we cannot reach
    assert {s.chooser.choose(KEY, set(), s.clock()) for _ in range(4)} == {B}


def test_when_only_unreachable_servers_are_left_casts_get_noserver_and_calls_one_of_them(s):
    s.matchmaker.serve(KEY, A, B)
    s.outbox.kill(A)
    assert s.chooser.choose(KEY, {B}, s.clock()) == A  # a call: a new connection may tell
    lookups = s.matchmaker.lookups
    with pytest.raises(NoServer):
        s.chooser.choose(KEY, {B}, s.clock(), reachable_only=True)  # a cast: held instead
    assert s.matchmaker.lookups == lookups  # no fresh lookup for every held cast


def test_a_refused_server_is_reachable_again_once_a_connection_is_established(s):
    s.outbox.kill(A)
    assert s.chooser.unreachable(A)
    s.outbox.reconnect(A, handshake=False)  # back on its address, or only stopped: not gone
    assert not s.chooser.unreachable(A)
    assert A in s.outbox.suspects  # calls and casts still prefer others until its handshake


def test_a_lost_connection_not_re_established_in_time_makes_its_server_unreachable(s):
    s.outbox.lose(A)  # heartbeats unanswered: stopped, or its host is gone
    assert not s.chooser.unreachable(A)
    s.clock.advance(RECONNECT_GRACE / 2)
    s.outbox.lose(A)  # libzmq's reconnection attempts do not postpone it
    s.clock.advance(RECONNECT_GRACE / 2)
    assert s.chooser.unreachable(A)  # a gone host's kernel accepts no reconnection


def test_a_stopped_server_whose_kernel_accepts_the_reconnection_stays_reachable(s):
    s.outbox.lose(A)
    s.outbox.reconnect(A, handshake=False)
    s.clock.advance(RECONNECT_GRACE * 10)
    assert not s.chooser.unreachable(A)


def test_a_silent_server_is_suspect_but_not_unreachable(s):
    s.outbox.drop(A)  # no ACK in time: we closed its connection ourselves
    assert A in s.outbox.suspects
    assert not s.chooser.unreachable(A)


def test_what_we_knew_of_a_connection_we_closed_goes_stale(s):
    s.outbox.kill(A)
    s.outbox.drop(A)  # closed (zmq_max_connections): nobody watches it any more
    s.clock.advance(SUSPECT_FOR - 1)
    assert s.chooser.unreachable(A)
    s.clock.advance(1)
    assert not s.chooser.unreachable(A)  # the next fanout tries it: a new connection tells
    s.outbox.kill(A)
    assert s.chooser.unreachable(A)


def test_suspects_are_forgotten_once_expired_so_choosing_takes_the_short_way(s):
    suspects = s.outbox.suspects
    assert not suspects.any()
    suspects.mark(A)
    suspects.refused(B)
    assert suspects.any()
    suspects.clear(B)  # B handshook
    s.clock.advance(SUSPECT_FOR + 1)
    assert not suspects.any()
    assert A not in suspects


def test_an_unreachable_server_is_not_forgotten_until_it_is_reached(s):
    s.outbox.suspects.refused(A)
    s.clock.advance(SUSPECT_FOR + 1)
    assert s.outbox.suspects.any()  # its connection is still down
    assert s.chooser.unreachable(A)
    s.outbox.suspects.reached(A)
    assert not s.outbox.suspects.any()
    assert not s.chooser.unreachable(A)
