"""The decisions after the matchmaker lost its records (zmqdriver.reregister)."""

from __future__ import annotations

import random

from zmqdriver.reregister import Holding, hold_for, kept, reregister_delay


def test_delays_stay_within_the_spread_and_cover_it():
    draws = random.Random(12)
    delays = [reregister_delay(2.0, draws.random()) for _ in range(10_000)]
    assert all(0.0 <= delay < 2.0 for delay in delays)
    # Evenly: each quarter of the spread gets about a quarter of the processes.
    quarters = [sum(q * 0.5 <= d < (q + 1) * 0.5 for d in delays) for q in range(4)]
    assert all(2_300 < count < 2_700 for count in quarters)


def test_a_negative_spread_is_no_spread():
    assert reregister_delay(-1.0, 0.7) == 0.0
    assert hold_for(-1.0) == hold_for(0.0)


def test_the_hold_outlasts_the_last_turn():
    assert hold_for(2.0) > 2.0 + 1.0  # the spread, and the second it takes to notice


def test_kept_adds_known_servers_once():
    assert kept(["b", "a"], ["a", "c"]) == ["a", "b", "c"]
    assert kept([], []) == []


def test_calm_answers_pass_through_and_are_learnt():
    holding = Holding(5.0)
    answer = ["a", "b"]
    assert holding.answer("k", answer, now=0.0) is answer
    holding.suspect(now=1.0)
    assert holding.answer("k", [], now=2.0) == ["a", "b"]
    complete = ["a", "b", "c"]
    assert holding.answer("k", complete, now=2.0) is complete  # the matchmaker's own
    assert holding.answer("other", ["x"], now=2.0) == ["x"]


def test_answers_while_holding_only_add_to_what_is_known():
    holding = Holding(5.0)
    holding.answer("k", ["a"], now=0.0)
    holding.suspect(now=1.0)
    assert holding.answer("k", ["b"], now=2.0) == ["a", "b"]
    assert holding.answer("k", [], now=3.0) == ["a", "b"]
    assert holding.answer("k", ["c"], now=6.0) == ["c"]  # the hold ended at 6.0
    holding.suspect(now=7.0)
    assert holding.answer("k", [], now=8.0) == ["c"]


def test_what_a_start_reads_while_holding_is_kept_after_a_later_loss():
    holding = Holding(5.0)
    holding.suspect(now=0.0)  # the watch came up at the start
    holding.answer("k", ["a", "b"], now=1.0)  # read once, then cached by push
    holding.suspect(now=60.0)  # Redis restarted empty a minute later
    assert holding.answer("k", ["b"], now=61.0) == ["a", "b"]


def test_a_new_suspicion_extends_the_hold_and_never_shortens_it():
    holding = Holding(5.0)
    holding.suspect(now=10.0)
    holding.suspect(now=3.0)  # a stale one
    assert holding.holding(14.9)
    holding.suspect(now=14.0)
    assert holding.holding(18.9)
    assert not holding.holding(19.0)


def test_no_hold_never_holds():
    holding = Holding(0.0)
    holding.answer("k", ["a"], now=0.0)
    holding.suspect(now=1.0)
    assert not holding.holding(1.0)
    assert holding.answer("k", [], now=1.0) == []
