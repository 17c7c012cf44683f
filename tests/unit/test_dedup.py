"""RecentIds: the bounded memory a server uses to drop resent duplicates."""

from __future__ import annotations

from zmqdriver.protocol import new_msg_id
from zmqdriver.rpc.dedup import RecentIds


def test_remembers_what_was_added():
    ids = RecentIds(10)
    first, second, unseen = new_msg_id(), new_msg_id(), new_msg_id()
    ids.add(first)
    ids.add(second)
    assert first in ids
    assert second in ids
    assert unseen not in ids
    assert len(ids) == 2


def test_adding_an_id_twice_keeps_one_entry():
    ids = RecentIds(10)
    msg_id = new_msg_id()
    ids.add(msg_id)
    ids.add(msg_id)
    assert msg_id in ids
    assert len(ids) == 1


def test_forgets_the_oldest_beyond_capacity():
    ids = RecentIds(3)
    added = [new_msg_id() for _ in range(5)]
    for msg_id in added:
        ids.add(msg_id)
    assert len(ids) == 3
    assert [msg_id in ids for msg_id in added] == [False, False, True, True, True]


def test_forgets_one_at_a_time_in_insertion_order():
    ids = RecentIds(2)
    a, b, c = b"a" * 16, b"b" * 16, b"c" * 16
    ids.add(a)
    ids.add(b)
    ids.add(c)
    assert a not in ids and b in ids and c in ids
    ids.add(a)
    assert b not in ids and c in ids and a in ids


def test_capacity_one():
    ids = RecentIds(1)
    a, b = new_msg_id(), new_msg_id()
    ids.add(a)
    assert a in ids
    ids.add(b)
    assert a not in ids and b in ids
    assert len(ids) == 1


def test_capacity_zero_remembers_nothing():
    ids = RecentIds(0)
    msg_id = new_msg_id()
    ids.add(msg_id)
    assert msg_id not in ids
    assert len(ids) == 0


def test_negative_capacity_remembers_nothing():
    ids = RecentIds(-5)
    msg_id = new_msg_id()
    ids.add(msg_id)
    assert msg_id not in ids
    assert len(ids) == 0


def test_memory_stays_bounded_under_many_ids():
    ids = RecentIds(100)
    last = None
    for _ in range(10_000):
        last = new_msg_id()
        ids.add(last)
    assert len(ids) == 100
    assert last in ids
