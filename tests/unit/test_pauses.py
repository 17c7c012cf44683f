"""PauseWatch: which gaps count as a pause of the process, with a hand-moved clock."""

from __future__ import annotations

import pytest

from tests.unit.rpc.fakes import Clock
from zmqdriver.eventloop.pauses import PauseWatch


def watch(threshold: float = 2.0):
    clock = Clock()
    pauses: list[float] = []
    w = PauseWatch(threshold, clock=clock)
    w.subscribe(pauses.append)
    return w, clock, pauses


def test_a_loop_that_sleeps_as_it_chose_is_not_paused():
    w, clock, pauses = watch()
    for _ in range(10):
        clock.advance(w.longest_sleep)
        w.awake(slept=w.longest_sleep)
    assert pauses == [] and w.generation == 0


def test_a_pause_longer_than_the_threshold_is_seen_even_inside_a_sleep():
    w, clock, pauses = watch(threshold=2.0)
    clock.advance(2.1)  # frozen during a 1 s sleep: only 1.1 s more than chosen
    w.awake(slept=w.longest_sleep)
    assert pauses == [pytest.approx(1.1)]
    assert w.generation == 1


def test_a_pause_shorter_than_half_the_threshold_is_not_a_pause():
    w, clock, pauses = watch(threshold=2.0)
    clock.advance(0.9)
    w.awake()
    assert pauses == []


def test_stalled_tells_other_threads_before_the_loop_notices():
    w, clock, _ = watch(threshold=2.0)
    generation = w.generation
    clock.advance(1.0)
    assert not w.stalled() and not w.paused_since(generation)
    clock.advance(1.5)
    assert w.stalled() and w.paused_since(generation)
    w.awake()
    assert not w.stalled() and w.paused_since(generation)  # the generation moved on
    assert not w.paused_since(w.generation)
