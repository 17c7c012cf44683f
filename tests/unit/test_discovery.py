"""Directory (cached client lookups) and Registrar (keeping server records alive)."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
from oslo_config import cfg

from zmqdriver import discovery, options, reregister
from zmqdriver.addressing import Endpoint, encode_record
from zmqdriver.backoff import Backoff
from zmqdriver.discovery import Directory, Registrar
from zmqdriver.matchmaker import MatchMaker, MatchMakerUnavailable
from zmqdriver.matchmaker.local import LocalMatchMaker

pytestmark = pytest.mark.timeout(60)

KEY = "zmqdriver/rpc/openstack/compute"
OTHER_KEY = "zmqdriver/rpc/openstack/compute/host-1"
EP1 = Endpoint("10.0.0.1", 5001)
EP2 = Endpoint("10.0.0.2", 5002)
REC1 = encode_record(EP1)
REC2 = encode_record(EP2)
WAIT = 10.0  # generous: conditions are normally met in milliseconds


class FakeMatchMaker(MatchMaker):
    """An in-memory matchmaker that counts calls and fails on demand."""

    def __init__(self) -> None:
        super().__init__(conf=None, url=None)
        self.store: dict[str, set[str]] = {}
        self.lookups = 0
        self.registers: Counter[tuple[str, str]] = Counter()
        self.expires: list[float] = []
        self.failures = 0
        self.fail_next_registers = 0
        self.fail_lookups = False
        self.cond = threading.Condition()
        # Make the next register of one record wait until ``release`` is set.
        self.hold_record: str | None = None
        self.held = threading.Event()
        self.release = threading.Event()

    def register(self, key: str, record: str, expire: float) -> None:
        with self.cond:
            if self.fail_next_registers:
                self.fail_next_registers -= 1
                self.failures += 1
                self.cond.notify_all()
                raise MatchMakerUnavailable("matchmaker is down (fake)")
            hold = self.hold_record == record
            if hold:
                self.hold_record = None
        if hold:
            self.held.set()
            assert self.release.wait(WAIT)
        with self.cond:
            self.store.setdefault(key, set()).add(record)
            self.registers[key, record] += 1
            self.expires.append(expire)
            self.cond.notify_all()

    def unregister(self, key: str, record: str) -> None:
        with self.cond:
            self.store.get(key, set()).discard(record)

    def lookup(self, key: str) -> list[str]:
        with self.cond:
            self.lookups += 1
            if self.fail_lookups:
                raise MatchMakerUnavailable("matchmaker is down (fake)")
            return sorted(self.store.get(key, ()))

    def put(self, key: str, *records: str) -> None:
        """Set what ``lookup(key)`` returns, bypassing the counters."""
        with self.cond:
            self.store[key] = set(records)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def mm() -> FakeMatchMaker:
    return FakeMatchMaker()


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    # Directory reads time only through ``time.monotonic``: drive it by hand.
    fake = FakeClock()
    monkeypatch.setattr(discovery, "time", fake)
    return fake


@pytest.fixture
def fast_backoff(monkeypatch):
    # Retries after a failure wait 1s and more; shorten them so tests stay fast.
    monkeypatch.setattr(discovery, "_REFRESH_BACKOFF", Backoff(0.01, 0.02))


@pytest.fixture
def registrars():
    """Registrars made by a test are stopped after it, even when it fails."""
    made: list[Registrar] = []

    def make(matchmaker, expire=60.0, update=0.02) -> Registrar:
        registrar = Registrar(matchmaker, expire=expire, update=update)
        made.append(registrar)
        return registrar

    yield make
    for registrar in made:
        registrar.stop()


# -- Directory -------------------------------------------------------------------


def test_directory_returns_decoded_sorted_unique_endpoints(mm):
    same_as_ep1 = '{"v": 1, "port": 5001, "host": "10.0.0.1"}'  # other spelling
    mm.put(KEY, REC2, REC1, same_as_ep1)
    assert Directory(mm, ttl=1.0).endpoints(KEY) == [EP1, EP2]


def test_directory_unknown_key_is_empty(mm):
    assert Directory(mm, ttl=1.0).endpoints("nobody/home") == []


def test_directory_caches_within_ttl(mm, clock):
    mm.put(KEY, REC1)
    directory = Directory(mm, ttl=1.0)
    assert directory.endpoints(KEY) == [EP1]
    mm.put(KEY, REC1, REC2)
    clock.now += 0.99
    assert directory.endpoints(KEY) == [EP1]
    assert mm.lookups == 1
    clock.now += 0.01
    assert directory.endpoints(KEY) == [EP1, EP2]
    assert mm.lookups == 2


def test_directory_caches_each_key_separately(mm, clock):
    mm.put(KEY, REC1)
    mm.put(OTHER_KEY, REC2)
    directory = Directory(mm, ttl=10.0)
    assert directory.endpoints(KEY) == [EP1]
    assert directory.endpoints(OTHER_KEY) == [EP2]
    assert directory.endpoints(KEY) == [EP1]
    assert directory.endpoints(OTHER_KEY) == [EP2]
    assert mm.lookups == 2


def test_directory_ttl_zero_always_asks(mm, clock):
    mm.put(KEY, REC1)
    directory = Directory(mm, ttl=0.0)
    for _ in range(3):
        assert directory.endpoints(KEY) == [EP1]
    assert mm.lookups == 3


def test_directory_fresh_bypasses_and_refills_the_cache(mm, clock):
    mm.put(KEY, REC1)
    directory = Directory(mm, ttl=60.0)
    assert directory.endpoints(KEY) == [EP1]
    mm.put(KEY, REC2)
    assert directory.endpoints(KEY, fresh=True) == [EP2]
    assert mm.lookups == 2
    # The fresh answer is what the cache now holds.
    assert directory.endpoints(KEY) == [EP2]
    assert mm.lookups == 2


def test_directory_invalidate_forgets_one_key(mm, clock):
    mm.put(KEY, REC1)
    mm.put(OTHER_KEY, REC1)
    directory = Directory(mm, ttl=60.0)
    directory.endpoints(KEY)
    directory.endpoints(OTHER_KEY)
    mm.put(KEY, REC2)
    mm.put(OTHER_KEY, REC2)
    directory.invalidate(KEY)
    assert directory.endpoints(KEY) == [EP2]
    assert directory.endpoints(OTHER_KEY) == [EP1]  # still cached
    assert mm.lookups == 3
    directory.invalidate("never/looked/up")  # no error


def test_directory_skips_invalid_records_with_a_warning(mm, caplog):
    mm.put(KEY, REC1, "not json", '{"v": 1, "host": "bad host", "port": 1}', REC2)
    with caplog.at_level(logging.WARNING, logger=discovery.LOG.name):
        assert Directory(mm, ttl=1.0).endpoints(KEY) == [EP1, EP2]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all(KEY in message for message in warnings)
    assert any("not JSON" in message for message in warnings)
    assert any("invalid host 'bad host'" in message for message in warnings)


def test_directory_uses_the_last_answer_while_the_matchmaker_is_down(mm, clock, caplog):
    mm.put(KEY, REC1)
    directory = Directory(mm, ttl=1.0)
    assert directory.endpoints(KEY) == [EP1]
    mm.fail_lookups = True
    clock.now += 5
    with caplog.at_level(logging.WARNING, logger=discovery.LOG.name):
        assert directory.endpoints(KEY) == [EP1]
        assert directory.endpoints(KEY, fresh=True) == [EP1]
    assert any("using the last answer" in r.getMessage() for r in caplog.records)
    # A failed lookup re-arms the cache, so a down matchmaker is asked once
    # per ttl, not on every message; after that the new answer comes through.
    mm.fail_lookups = False
    mm.put(KEY, REC2)
    assert directory.endpoints(KEY) == [EP1]
    clock.now += 1.5
    assert directory.endpoints(KEY) == [EP2]


def test_directory_without_a_previous_answer_raises(mm):
    mm.fail_lookups = True
    directory = Directory(mm, ttl=1.0)
    with pytest.raises(MatchMakerUnavailable):
        directory.endpoints(KEY)
    # The failure is not cached as an answer.
    mm.fail_lookups = False
    mm.put(KEY, REC1)
    assert directory.endpoints(KEY) == [EP1]


def test_directory_after_invalidate_a_failure_raises(mm):
    mm.put(KEY, REC1)
    directory = Directory(mm, ttl=60.0)
    directory.endpoints(KEY)
    directory.invalidate(KEY)
    mm.fail_lookups = True
    with pytest.raises(MatchMakerUnavailable):
        directory.endpoints(KEY)


# -- Registrar -------------------------------------------------------------------


def _registrar_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "zmqdriver-registrar"}


def test_add_registers_at_once_under_every_key(mm, registrars):
    registrar = registrars(mm, expire=42.0, update=3600.0)
    registrar.add([KEY, OTHER_KEY], REC1)
    # No waiting: add() itself registered.
    assert mm.store == {KEY: {REC1}, OTHER_KEY: {REC1}}
    assert mm.registers == {(KEY, REC1): 1, (OTHER_KEY, REC1): 1}
    assert mm.expires == [42.0, 42.0]


def test_remove_unregisters_under_every_key(mm, registrars):
    registrar = registrars(mm, update=3600.0)
    registrar.add([KEY, OTHER_KEY], REC1)
    registrar.add([KEY], REC2)
    registrar.remove([KEY, OTHER_KEY], REC1)
    assert mm.store == {KEY: {REC2}, OTHER_KEY: set()}


def test_remove_tolerates_an_unreachable_matchmaker(registrars, caplog):
    class Unreachable(FakeMatchMaker):
        def unregister(self, key, record):
            raise MatchMakerUnavailable("down (fake)")

    unreachable = Unreachable()
    registrar = registrars(unreachable, update=3600.0)
    registrar.add([KEY], REC1)
    with caplog.at_level(logging.WARNING, logger=discovery.LOG.name):
        registrar.remove([KEY], REC1)
    assert any("Cannot unregister" in r.getMessage() for r in caplog.records)


def test_refresh_thread_re_registers_every_record(mm, registrars):
    registrar = registrars(mm, expire=60.0, update=0.01)
    registrar.add([KEY, OTHER_KEY], REC1)
    registrar.add([KEY], REC2)
    assert mm.wait_for(lambda: min(mm.registers.values()) >= 4)
    assert set(mm.registers) == {(KEY, REC1), (OTHER_KEY, REC1), (KEY, REC2)}
    assert set(mm.expires) == {60.0}


def test_removed_records_are_no_longer_refreshed(mm, registrars):
    registrar = registrars(mm, update=0.01)
    registrar.add([KEY], REC1)
    registrar.add([OTHER_KEY], REC2)  # a marker that keeps being refreshed
    registrar.remove([KEY], REC1)
    marker = mm.registers[OTHER_KEY, REC2]
    # Two marker refreshes later, any refresh that began before remove() is over.
    assert mm.wait_for(lambda: mm.registers[OTHER_KEY, REC2] >= marker + 2)
    removed = mm.registers[KEY, REC1]
    assert mm.wait_for(lambda: mm.registers[OTHER_KEY, REC2] >= marker + 4)
    assert mm.registers[KEY, REC1] == removed


def test_one_refresh_thread_per_registrar(mm, registrars):
    before = _registrar_threads()
    registrar = registrars(mm, update=3600.0)
    registrar.add([KEY], REC1)
    registrar.add([OTHER_KEY], REC2)
    assert len(_registrar_threads() - before) == 1


def test_add_while_the_matchmaker_is_down_registers_after_recovery(
    mm, registrars, fast_backoff, caplog
):
    mm.fail_next_registers = 3  # add() and two retries fail
    registrar = registrars(mm, update=3600.0)  # so only the retry path can register
    with caplog.at_level(logging.ERROR, logger=discovery.LOG.name):
        registrar.add([KEY], REC1)  # does not raise
    assert mm.store == {}
    assert any("Cannot register" in r.getMessage() for r in caplog.records)
    assert mm.wait_for(lambda: mm.registers[KEY, REC1] >= 1)
    assert mm.failures == 3
    assert mm.store == {KEY: {REC1}}


def test_refresh_recovers_after_the_matchmaker_fails(mm, registrars, fast_backoff):
    registrar = registrars(mm, update=0.01)
    registrar.add([KEY, OTHER_KEY], REC1)
    assert mm.wait_for(lambda: mm.registers[KEY, REC1] >= 2)
    # The matchmaker goes down (and forgets everything, as a restarted Redis would).
    with mm.cond:
        mm.store.clear()
        before = mm.registers[KEY, REC1]
        mm.fail_next_registers = 5
    assert mm.wait_for(lambda: mm.failures == 5)
    assert mm.wait_for(lambda: mm.registers[KEY, REC1] > before)
    assert mm.wait_for(lambda: mm.store == {KEY: {REC1}, OTHER_KEY: {REC1}})


def test_stop_ends_the_refresh_thread(mm):
    before = _registrar_threads()
    registrar = Registrar(mm, expire=60.0, update=3600.0)  # the thread sleeps long
    registrar.add([KEY], REC1)
    (thread,) = _registrar_threads() - before
    assert thread.is_alive()
    registrar.stop()  # must wake it, not wait an hour (or the 10s join limit)
    assert not thread.is_alive()


def test_stop_without_records_is_a_no_op(mm):
    registrar = Registrar(mm, expire=60.0, update=1.0)
    registrar.stop()
    registrar.stop()
    assert mm.registers == {}


def test_stop_does_not_unregister(mm):
    # Stopping the refresher is not removal: records expire on their own.
    registrar = Registrar(mm, expire=60.0, update=3600.0)
    registrar.add([KEY], REC1)
    registrar.stop()
    assert mm.store == {KEY: {REC1}}


def test_remove_during_a_refresh_is_not_undone(mm, registrars):
    registrar = registrars(mm, update=0.01)
    registrar.add([KEY], REC1)
    with mm.cond:
        mm.hold_record = REC1  # the refresh thread's next register of REC1 waits
    assert mm.held.wait(WAIT)
    registered = mm.registers[KEY, REC1]
    registrar.remove([KEY], REC1)
    mm.release.set()
    assert mm.wait_for(lambda: mm.registers[KEY, REC1] > registered)
    assert REC1 not in mm.lookup(KEY)


# -- with the real embedded matchmaker ---------------------------------------------


@pytest.fixture
def local_mm(tmp_path):
    conf = cfg.ConfigOpts()
    options.register(conf)
    conf([])
    conf.set_override("zmq_matchmaker_path", str(tmp_path / "mm.sqlite"), group=options.GROUP)
    matchmaker = LocalMatchMaker(conf, None)
    yield matchmaker
    matchmaker.close()


def test_registrar_and_directory_over_the_embedded_matchmaker(local_mm, registrars, caplog):
    registrar = registrars(local_mm, update=3600.0)
    directory = Directory(local_mm, ttl=60.0)
    assert directory.endpoints(KEY) == []
    registrar.add([KEY, OTHER_KEY], REC1)
    registrar.add([KEY], REC2)
    local_mm.register(KEY, "garbage", 60.0)  # e.g. written by a newer release
    assert directory.endpoints(KEY) == []  # cached
    with caplog.at_level(logging.WARNING, logger=discovery.LOG.name):
        assert directory.endpoints(KEY, fresh=True) == [EP1, EP2]
    assert any("Skipping matchmaker record" in r.getMessage() for r in caplog.records)
    assert directory.endpoints(OTHER_KEY) == [EP1]
    registrar.remove([KEY, OTHER_KEY], REC1)
    assert directory.endpoints(KEY, fresh=True) == [EP2]
    assert directory.endpoints(OTHER_KEY, fresh=True) == []


# -- Directory with a matchmaker that pushes changes ---------------------------------


class FakeWatch:
    """A push channel driven by hand: ``push(key)`` is what the matchmaker's thread does."""

    def __init__(self, on_change) -> None:
        self.on_change = on_change
        self.up = True
        self.stopped = False

    def push(self, key: str | None) -> None:
        self.on_change(key)

    def stop(self) -> None:
        self.stopped = True


class PushingMatchMaker(FakeMatchMaker):
    def __init__(self) -> None:
        super().__init__()
        self.watches: list[FakeWatch] = []
        self.during_lookup: Callable[[], None] | None = None  # runs inside the next lookup

    def watch(self, prefix, on_change):
        assert prefix == "zmqdriver/rpc/"
        self.watches.append(FakeWatch(on_change))
        return self.watches[-1]

    def lookup(self, key: str) -> list[str]:
        found = super().lookup(key)
        if self.during_lookup is not None:
            during, self.during_lookup = self.during_lookup, None
            during()
        return found


@pytest.fixture
def pushing() -> PushingMatchMaker:
    return PushingMatchMaker()


def watched(matchmaker, ttl: float = 1.0) -> Directory:
    return Directory(matchmaker, ttl=ttl, watch_prefix="zmqdriver/rpc/")


def test_a_pushed_answer_stays_cached_until_its_key_changes(pushing, clock):
    pushing.put(KEY, REC1)
    directory = watched(pushing)
    assert directory.endpoints(KEY) == [EP1]
    [watch] = pushing.watches
    clock.now += 3600  # far past the ttl: the watch says nothing changed
    assert directory.endpoints(KEY) == [EP1]
    assert pushing.lookups == 1
    pushing.put(KEY, REC1, REC2)
    watch.push(KEY)  # a new server: seen at the next request, not after the ttl
    assert directory.endpoints(KEY) == [EP1, EP2]
    assert pushing.lookups == 2
    watch.push(OTHER_KEY)  # another key's change costs this one nothing
    assert directory.endpoints(KEY) == [EP1, EP2]
    assert pushing.lookups == 2


def test_a_change_pushed_during_a_lookup_leaves_that_answer_to_the_ttl(pushing, clock):
    pushing.put(KEY, REC1)
    directory = watched(pushing)
    directory.endpoints(OTHER_KEY)  # starts the watch
    [watch] = pushing.watches
    # The record that arrives while the lookup runs is not in what it read.
    pushing.during_lookup = lambda: (pushing.put(KEY, REC1, REC2), watch.push(KEY))
    assert directory.endpoints(KEY) == [EP1]
    clock.now += 1.0
    assert directory.endpoints(KEY) == [EP1, EP2]


def test_a_change_of_another_key_during_a_lookup_costs_that_answer_nothing(pushing, clock):
    pushing.put(KEY, REC1)
    directory = watched(pushing)
    directory.endpoints(OTHER_KEY)  # starts the watch
    [watch] = pushing.watches
    pushing.during_lookup = lambda: watch.push(OTHER_KEY)  # a server registers both keys
    assert directory.endpoints(KEY) == [EP1]
    clock.now += 3600
    assert directory.endpoints(KEY) == [EP1]
    assert pushing.lookups == 2


def test_while_the_watch_is_down_answers_last_the_ttl(pushing, clock):
    pushing.put(KEY, REC1)
    directory = watched(pushing)
    directory.endpoints(KEY)
    [watch] = pushing.watches
    watch.up = False
    pushing.put(KEY, REC2)
    clock.now += 0.5
    assert directory.endpoints(KEY) == [EP1]  # cached, within the ttl
    clock.now += 0.5
    assert directory.endpoints(KEY) == [EP2]  # polled, as without push
    assert pushing.lookups == 2


def test_when_the_watch_comes_back_older_answers_last_the_ttl(pushing, clock):
    pushing.put(KEY, REC1)
    directory = watched(pushing)
    directory.endpoints(KEY)
    [watch] = pushing.watches
    watch.up = False
    pushing.put(KEY, REC2)  # a change the watch did not see
    watch.up = True
    watch.push(None)  # it came back: what happened meanwhile is unknown
    clock.now += 1.0
    assert directory.endpoints(KEY) == [EP2]
    clock.now += 3600  # read while up, and nothing changed since
    assert directory.endpoints(KEY) == [EP2]
    assert pushing.lookups == 2


class ExpiringMatchMaker(PushingMatchMaker):
    """Pushes changes but not expiries, as Redis: an answer says when its first record expires."""

    def __init__(self) -> None:
        super().__init__()
        self.expires_in: float | None = 10.0

    def lookup_with_expiry(self, key: str) -> tuple[list[str], float | None]:
        return self.lookup(key), self.expires_in


def test_a_pushed_answer_is_read_again_when_its_first_record_expires(clock):
    expiring = ExpiringMatchMaker()
    expiring.put(KEY, REC1, REC2)
    directory = watched(expiring)
    assert directory.endpoints(KEY) == [EP1, EP2]
    clock.now += 9.9  # far past the ttl, before the first expiry: nothing to read
    assert directory.endpoints(KEY) == [EP1, EP2]
    assert expiring.lookups == 1
    expiring.put(KEY, REC2)  # REC1's server died: its record expires, and nobody pushes that
    expiring.expires_in = None  # REC2 never expires
    clock.now += 0.1
    assert directory.endpoints(KEY) == [EP2]
    clock.now += 3600
    assert directory.endpoints(KEY) == [EP2]
    assert expiring.lookups == 2


def test_a_matchmaker_that_cannot_push_is_polled(mm, clock):
    directory = watched(mm)
    mm.put(KEY, REC1)
    directory.endpoints(KEY)
    mm.put(KEY, REC2)
    clock.now += 1.0
    assert directory.endpoints(KEY) == [EP2]
    directory.close()


def test_close_stops_the_watch(pushing):
    directory = watched(pushing)
    directory.endpoints(KEY)
    directory.close()
    assert pushing.watches[0].stopped


def test_without_a_watch_prefix_nothing_is_watched(pushing):
    Directory(pushing, ttl=1.0).endpoints(KEY)
    assert pushing.watches == []


# -- after the matchmaker lost its records (zmqdriver.reregister) ---------------------


class ResettableMatchMaker(FakeMatchMaker):
    """A matchmaker that can forget everything, as Redis restarted empty does."""

    def __init__(self) -> None:
        super().__init__()
        self.token = "first"
        self.polls = 0
        self.fail_generations = 0

    def generation(self, key: str) -> str | None:
        with self.cond:
            self.polls += 1
            self.cond.notify_all()
            if self.fail_generations:
                self.fail_generations -= 1
                raise MatchMakerUnavailable("matchmaker is down (fake)")
            return self.token

    def lose_everything(self) -> None:
        with self.cond:
            self.store.clear()
            self.token = "second"


def _registrar_after_a_loss(
    spread: float, lost: threading.Event
) -> tuple[Registrar, ResettableMatchMaker]:
    """A registrar of REC1 whose matchmaker then lost its records; and REC1's registers."""
    mm = ResettableMatchMaker()
    registrar = Registrar(
        mm, expire=60.0, update=3600.0, generation_key="g", spread=spread, on_lost=lost.set
    )
    registrar.add([KEY], REC1)
    # The first poll learns the generation; only a change after it is a loss.
    assert mm.wait_for(lambda: mm.polls >= 1)
    mm.lose_everything()
    return registrar, mm


def test_a_lost_record_is_registered_again_at_once_without_spread():
    lost = threading.Event()
    registrar, mm = _registrar_after_a_loss(0.0, lost)
    try:
        assert mm.wait_for(lambda: mm.store == {KEY: {REC1}})
        assert lost.is_set()
    finally:
        registrar.stop()


def test_a_lost_record_waits_its_turn_in_the_spread():
    lost = threading.Event()
    registrar, mm = _registrar_after_a_loss(1e9, lost)  # a turn that never comes in a test
    try:
        assert lost.wait(WAIT)
        assert mm.store == {}  # noticed, not registered: the refresh is due in its turn
        registrar.add([OTHER_KEY], REC2)  # a server starting meanwhile is not held back
        assert mm.store == {OTHER_KEY: {REC2}}
    finally:
        registrar.stop()


# -- noticing a loss through the push channel -------------------------------------------


class PushingResettableMatchMaker(PushingMatchMaker, ResettableMatchMaker):
    """Pushes changes, and can forget everything: Redis with its subscription."""


@pytest.fixture
def fast_ticks(monkeypatch):
    # The registrar looks at its channel once a tick (1 s): make a tick 10 ms.
    monkeypatch.setattr(discovery, "_TICK", 0.01)


def _ticks(count: int = 30) -> None:
    """Let the registrar's thread look at its channel ``count`` times, give or take."""
    time.sleep(count * 0.01)


@pytest.fixture
def pushed(fast_ticks):
    """A registrar of REC1 whose channel is its Directory's watch; its matchmaker; its watch."""
    mm = PushingResettableMatchMaker()
    lost = threading.Event()
    directory = Directory(mm, ttl=1.0, watch_prefix="zmqdriver/rpc/")
    registrar = Registrar(mm, 60.0, 3600.0, generation_key="g", on_lost=lost.set, channel=directory)
    registrar.add([KEY], REC1)
    assert mm.wait_for(lambda: mm.polls >= 1)  # the first read learns the generation
    [watch] = mm.watches  # opened for the registrar: this process never looked anything up
    yield mm, watch, lost
    registrar.stop()
    directory.close()


def test_while_its_channel_is_up_a_registrar_does_not_poll_the_generation(pushed):
    mm, _, lost = pushed
    _ticks()
    assert mm.polls == 1
    mm.lose_everything()  # a loss the channel did not see (FLUSHALL): left to the safety net
    _ticks()
    assert mm.polls == 1 and not lost.is_set()


def test_when_its_channel_comes_back_up_a_registrar_reads_the_generation(pushed):
    mm, watch, lost = pushed
    mm.lose_everything()  # Redis restarted empty: the subscription broke and comes back
    watch.push(None)
    assert lost.wait(WAIT)
    assert mm.wait_for(lambda: mm.store == {KEY: {REC1}})
    polls = mm.polls
    _ticks()
    assert mm.polls == polls  # once per coming up


def test_a_failed_read_after_the_channel_came_up_is_tried_again(pushed):
    mm, watch, lost = pushed
    with mm.cond:
        mm.fail_generations = 1  # Redis still loading, say
    mm.lose_everything()
    watch.push(None)
    assert lost.wait(WAIT)
    assert mm.polls >= 3


def test_while_its_channel_is_down_a_registrar_polls_every_tick(pushed):
    mm, watch, lost = pushed
    watch.up = False  # a refused subscription, or Redis away: no push to learn from
    assert mm.wait_for(lambda: mm.polls >= 5)
    mm.lose_everything()
    assert lost.wait(WAIT)


def test_with_its_channel_up_the_generation_is_still_read_now_and_then(pushed, monkeypatch):
    mm, _, lost = pushed
    monkeypatch.setattr(reregister, "STEADY_CHECK_EVERY", 0.05)
    mm.lose_everything()  # FLUSHALL: no reconnect, nothing pushed
    assert lost.wait(WAIT)
    assert mm.wait_for(lambda: mm.store == {KEY: {REC1}})


def held(matchmaker, hold: float = 5.0, **kwargs) -> Directory:
    return Directory(matchmaker, ttl=1.0, hold=hold, **kwargs)


def test_after_a_loss_clients_keep_the_servers_they_knew_for_the_hold(mm, clock):
    mm.put(KEY, REC1, REC2)
    directory = held(mm)
    assert directory.endpoints(KEY) == [EP1, EP2]
    mm.put(KEY, REC2)  # lost, and one server registered again
    directory.records_lost()
    assert directory.endpoints(KEY, fresh=True) == [EP1, EP2]
    clock.now += 5.0  # the hold is over: the matchmaker's answer again
    assert directory.endpoints(KEY, fresh=True) == [EP2]


def test_a_kept_answer_is_read_again_after_the_ttl_even_with_push(pushing, clock):
    pushing.put(KEY, REC1, REC2)
    directory = held(pushing, watch_prefix="zmqdriver/rpc/")
    directory.endpoints(KEY)
    pushing.put(KEY, REC2)
    directory.records_lost()
    assert directory.endpoints(KEY, fresh=True) == [EP1, EP2]
    pushing.put(KEY, REC1, REC2)  # back, and its push arrived before the read above ended
    clock.now += 1.0
    assert directory.endpoints(KEY) == [EP1, EP2]
    assert pushing.lookups == 3  # not kept as a pushed answer: EP1 was not in Redis


def test_a_watch_that_drops_or_comes_back_starts_a_hold(pushing, clock):
    pushing.put(KEY, REC1, REC2)
    directory = held(pushing, watch_prefix="zmqdriver/rpc/")
    directory.endpoints(KEY)
    [watch] = pushing.watches
    watch.up = False  # Redis went away: the next lookup may read it restarted empty
    pushing.put(KEY)
    clock.now += 1.0
    assert directory.endpoints(KEY) == [EP1, EP2]
    clock.now += 5.0
    assert directory.endpoints(KEY) == []  # a watch still down does not hold for ever
    watch.up = True
    watch.push(None)  # back up: what it missed may be a loss too
    # Kept now: what was read after the last hold ended (nothing), not what came before.
    assert directory.endpoints(KEY, fresh=True) == []
    pushing.put(KEY, REC2)  # read during the hold: kept after it too
    assert directory.endpoints(KEY, fresh=True) == [EP2]
    pushing.put(KEY)
    watch.push(None)
    assert directory.endpoints(KEY, fresh=True) == [EP2]


def test_a_failed_lookup_starts_a_hold(mm, clock):
    mm.put(KEY, REC1)
    directory = held(mm)
    directory.endpoints(KEY)
    mm.fail_lookups = True
    assert directory.endpoints(KEY, fresh=True) == [EP1]  # the last answer, as before
    mm.fail_lookups = False
    mm.put(KEY)  # it came back empty
    assert directory.endpoints(KEY, fresh=True) == [EP1]


def test_without_a_hold_a_loss_shows_at_once(mm, clock):
    mm.put(KEY, REC1)
    directory = Directory(mm, ttl=1.0)
    directory.endpoints(KEY)
    mm.put(KEY)
    directory.records_lost()
    assert directory.endpoints(KEY, fresh=True) == []
