"""Discovery on top of a matchmaker: servers register, clients look up.

``Registrar`` keeps a server's records alive: it registers them at once,
refreshes them every ``zmq_target_update`` seconds and retries with backoff
while the matchmaker is down. ``Directory`` answers clients from a short
cache so the matchmaker is not on every message's path; with a matchmaker
that pushes changes (``MatchMaker.watch``: etcd, Redis) an answer stays cached
until a change of its key is pushed (or, on Redis, until its first record
expires), and a new or removed server is seen at once.

After the matchmaker lost its records (Redis restarted empty) servers register
again spread over ``zmq_reregister_spread`` seconds, and clients keep the servers
they knew meanwhile (``zmqdriver.reregister``). A registrar learns of a possible
loss from the process's push channel (the Directory's watch, opened for it in a
process that only serves): a restart breaks the channel, and it reads the
generation token when the channel comes back up, instead of every second.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from zmqdriver import addressing, metrics
from zmqdriver.addressing import Endpoint
from zmqdriver.backoff import Backoff
from zmqdriver.exceptions import BackendError, BackendUnavailable
from zmqdriver.matchmaker import MatchMaker
from zmqdriver.matchmaker.base import Watch
from zmqdriver.reregister import Holding, generation_check_due, reregister_delay
from zmqdriver.throttle import Throttle

LOG = logging.getLogger(__name__)

# Pauses between refreshes while the matchmaker fails.
_REFRESH_BACKOFF = Backoff(1.0, 30.0)
# Seconds between the registrar's looks at its push channel (no I/O), and between its reads
# of the generation token while no channel is up (reregister.NOTICE_WITHIN).
_TICK = 1.0


class PushChannel(Protocol):
    """What a Registrar asks of its process's push channel (``Directory`` is one)."""

    def open_watch(self) -> None:
        """Open the channel if it is not open yet (a process that only serves)."""

    def times_up(self) -> int | None:
        """How many times the channel came up; None while it is down, or cannot push."""


@dataclass(frozen=True)
class _Answer:
    """A cached lookup: when it was made, and whether pushes keep it current."""

    at: float
    endpoints: list[Endpoint]
    # How many times the watch had come up when it was read, if it was up and
    # no change of its key arrived during the lookup; None: valid for ``ttl`` only.
    pushed: int | None = None
    # When a pushed answer is stale anyway: its first record expires, and the
    # matchmaker does not push expiries (MatchMaker.lookup_with_expiry). None: never.
    until: float | None = None


class Directory:
    """Cached ``key -> endpoints`` lookups for clients.

    With ``require_key`` (CURVE on) servers whose record has no CURVE key are
    skipped: their traffic would not be encrypted, nor they authenticated.

    With ``watch_prefix`` the matchmaker is asked (at the first lookup, or at
    ``open_watch()``) to push changes under that prefix. While its watch is up,
    an answer read while no change of its key arrived stays valid until a change
    of its key drops it; or, with a matchmaker that does not push expiries, until
    its first record expires. While the watch is down (or the matchmaker cannot
    push), answers last ``ttl`` seconds, as without push. When the watch comes
    (back) up every answer falls back to ``ttl``: changes made meanwhile were not
    pushed.

    For ``hold`` seconds after a sign that the matchmaker may have lost records
    (the watch went down or came back up, a lookup failed, ``records_lost()``)
    fresh answers keep the servers known before (``reregister.Holding``), while
    those servers register again. ``hold`` 0 (the default) keeps nothing.
    """

    def __init__(
        self,
        matchmaker: MatchMaker,
        ttl: float,
        require_key: bool = False,
        watch_prefix: str | None = None,
        hold: float = 0.0,
    ) -> None:
        self._matchmaker = matchmaker
        self._ttl = ttl
        self._require_key = require_key
        self._cache: dict[str, _Answer] = {}
        # Once per server, not per lookup (math.inf: each key is admitted once).
        self._keyless = Throttle(every=math.inf)
        self._watch_prefix = watch_prefix
        self._watch: Watch | None = None
        self._watch_lock = threading.Lock()
        # Between lookups and the watch's thread: the keys being looked up now
        # (with how many threads), those of them a change arrived for meanwhile,
        # and how many times the watch came up (older answers are not pushed ones).
        self._push_lock = threading.Lock()
        self._looking: Counter[str] = Counter()
        self._dirty: set[str] = set()
        self._resyncs = 0
        self._holding = Holding(hold)
        self._watch_was_up = False  # as the last lookup saw it: a drop starts a hold

    def endpoints(self, key: str, fresh: bool = False) -> list[Endpoint]:
        """Live endpoints for ``key``; ``fresh`` bypasses the cache.

        When the matchmaker is unreachable the last known answer is used, so
        clients keep talking to the servers they know.
        """
        self.open_watch()
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached and not fresh and self._current(cached, now):
            return cached.endpoints
        pushing = self._pushing()
        self._notice_watch_drop(pushing, now)
        resyncs = self._lookup_starts(key) if pushing else None
        try:
            records, expires_in = self._read(key, pushed=resyncs is not None)
        except BackendError as exc:
            if resyncs is not None:
                self._lookup_ends(key, resyncs)
            metrics.incr("matchmaker_errors")
            self._holding.suspect(now)  # it may come back empty
            if cached:
                LOG.warning("Matchmaker lookup of %s failed (%s); using the last answer", key, exc)
                # Ask again only after another ttl, not on every message.
                self._cache[key] = _Answer(now, cached.endpoints)
                return cached.endpoints
            raise
        endpoints = sorted(set(_valid_endpoints(key, records)))
        if self._require_key:
            endpoints = self._keyed(key, endpoints)
        # A change pushed during the lookup may be missing from what was read.
        clean = resyncs is not None and self._lookup_ends(key, resyncs)
        until = None if expires_in is None else time.monotonic() + expires_in
        held = self._holding.answer(key, endpoints, now)
        if held is not endpoints:
            # Kept servers are not in the matchmaker: ask again after ttl, not at a push.
            endpoints, clean = held, False
        self._cache[key] = _Answer(now, endpoints, resyncs if clean else None, until)
        return endpoints

    def records_lost(self) -> None:
        """The matchmaker lost its records (the registrar saw it): keep the known servers."""
        self._holding.suspect(time.monotonic())

    def _notice_watch_drop(self, pushing: bool, now: float) -> None:
        # Once per drop: a watch that stays down (a refused subscription) must not
        # keep servers for ever. The lookup that sees it is the first that could
        # read a matchmaker restarted empty.
        if self._watch_was_up and not pushing:
            self._holding.suspect(now)
        self._watch_was_up = pushing

    def _read(self, key: str, pushed: bool) -> tuple[list[str], float | None]:
        """The records under ``key``, and for a pushed answer the seconds it may be kept."""
        with_expiry = getattr(self._matchmaker, "lookup_with_expiry", None)  # need not subclass
        if pushed and with_expiry is not None:
            return with_expiry(key)
        return self._matchmaker.lookup(key), None

    def _lookup_starts(self, key: str) -> int:
        with self._push_lock:
            self._looking[key] += 1
            return self._resyncs

    def _lookup_ends(self, key: str, resyncs: int) -> bool:
        """True when no change of ``key`` (nor a resync) arrived since ``_lookup_starts``."""
        with self._push_lock:
            clean = key not in self._dirty and resyncs == self._resyncs
            self._looking[key] -= 1
            if not self._looking[key]:
                del self._looking[key]
                self._dirty.discard(key)
            return clean

    def _current(self, answer: _Answer, now: float) -> bool:
        if answer.pushed is not None and answer.pushed == self._resyncs and self._pushing():
            return answer.until is None or now < answer.until
        return now - answer.at < self._ttl

    def _pushing(self) -> bool:
        return self._watch is not None and self._watch.up

    def open_watch(self) -> None:
        """Have the matchmaker push changes, if it can and was not asked yet."""
        if self._watch_prefix is not None and self._watch is None:
            self._start_watch()

    def times_up(self) -> int | None:
        """How many times the watch came up (PushChannel); None while it is down or absent."""
        with self._push_lock:
            return self._resyncs if self._pushing() else None

    def _start_watch(self) -> None:
        with self._watch_lock:
            if self._watch is not None or self._watch_prefix is None:
                return
            watch = getattr(self._matchmaker, "watch", None)  # plugins need not subclass
            try:
                self._watch = watch(self._watch_prefix, self._changed) if watch else None
            except Exception:
                LOG.exception("Cannot watch the matchmaker for changes; polling instead")
            if self._watch is None:
                self._watch_prefix = None  # cannot push: poll, and do not ask again

    def _changed(self, key: str | None) -> None:
        """A change pushed by the watch (its thread): ``key``'s, or None: any might have."""
        with self._push_lock:
            if key is None:
                # Came (back) up: what was missed may be a matchmaker restarted empty.
                self._holding.suspect(time.monotonic())
                self._resyncs += 1
                self._dirty.update(self._looking)
            else:
                self._cache.pop(key, None)
                if key in self._looking:
                    self._dirty.add(key)

    def close(self) -> None:
        """Stop the watch, if any."""
        with self._watch_lock:
            watch, self._watch, self._watch_prefix = self._watch, None, None
        if watch is not None:
            watch.stop()

    def _keyed(self, key: str, endpoints: list[Endpoint]) -> list[Endpoint]:
        keyed = [endpoint for endpoint in endpoints if endpoint.key]
        for endpoint in endpoints:
            if not endpoint.key and self._keyless.admit(endpoint) is not None:
                LOG.warning(
                    "Skipping server %s under %s: its record has no CURVE key and "
                    "zmq_curve_enabled is on here (the server runs without CURVE)",
                    endpoint,
                    key,
                )
        return keyed

    def invalidate(self, key: str) -> None:
        self._cache.pop(key, None)


def _valid_endpoints(key: str, records: list[str]):
    for record in records:
        try:
            yield addressing.decode_record(record)
        except ValueError as exc:
            LOG.warning("Skipping matchmaker record under %s: %s", key, exc)


class Registrar:
    """Keeps this process's server records registered until they are removed."""

    def __init__(
        self,
        matchmaker: MatchMaker,
        expire: float,
        update: float,
        generation_key: str | None = None,
        spread: float = 0.0,
        on_lost: Callable[[], None] = lambda: None,
        channel: PushChannel | None = None,
    ) -> None:
        """``spread``: after a loss of records, register again within that many seconds
        (reregister_delay); ``on_lost()`` is called (this thread) when the loss is seen.
        ``channel``: the process's push channel; while it is up the generation is read
        when it comes back up and rarely otherwise (generation_check_due), not every tick."""
        self._matchmaker = matchmaker
        self._expire = expire
        self._update = update
        self._generation_key = generation_key
        self._spread = spread
        self._on_lost = on_lost
        self._generation: str | None = None
        self._channel = channel
        # The channel's times_up() and the clock at the last generation read that succeeded.
        self._checked_up: int | None = None
        self._checked_at = -math.inf
        self._records: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._retry_pauses: Iterator[float] | None = None  # while refreshes fail

    def add(self, keys: list[str], record: str) -> None:
        """Register ``record`` under ``keys`` now, and keep it registered.

        An outage is retried in the background; a refusal that retrying
        cannot fix (credentials, certificates, a wrong service name) raises,
        so the server's start fails with the reason.
        """
        with self._lock:
            self._records.update((key, record) for key in keys)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="zmqdriver-registrar", daemon=True
                )
                self._thread.start()
        try:
            for key in keys:
                self._matchmaker.register(key, record, self._expire)
        except BackendUnavailable as exc:
            metrics.incr("matchmaker_errors")
            LOG.error("Cannot register %s in the matchmaker yet (%s); retrying", keys, exc)
            self._wakeup.set()
        except BackendError:
            metrics.incr("matchmaker_errors")
            with self._lock:
                self._records.difference_update((key, record) for key in keys)
            raise

    def remove(self, keys: list[str], record: str) -> None:
        """Stop refreshing and unregister ``record`` (best effort: it expires anyway)."""
        with self._lock:
            self._records.difference_update((key, record) for key in keys)
        for key in keys:
            try:
                self._matchmaker.unregister(key, record)
            except BackendError as exc:
                metrics.incr("matchmaker_errors")
                LOG.warning("Cannot unregister %s (%s); it expires in %ss", key, exc, self._expire)

    def _undo_if_removed(self, key: str, record: str) -> None:
        # remove() may have run while we were registering: it must win.
        with self._lock:
            removed = (key, record) not in self._records
        if removed:
            self._matchmaker.unregister(key, record)

    def stop(self) -> None:
        self._stopped = True
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        if self._channel is not None:
            self._channel.open_watch()  # no lookup may ever open it in a process that only serves
        next_refresh = time.monotonic() + self._update
        while not self._stopped:
            woken = self._wakeup.wait(min(_TICK, max(0.0, next_refresh - time.monotonic())))
            self._wakeup.clear()
            if self._stopped:
                return
            if woken or time.monotonic() >= next_refresh:
                next_refresh = time.monotonic() + self._refresh_all()
            elif self._backend_was_reset():
                next_refresh = min(next_refresh, time.monotonic() + self._reregister_in())

    def _reregister_in(self) -> float:
        """Seconds until this process registers again after a loss: its turn in the spread."""
        self._on_lost()
        delay = reregister_delay(self._spread, random.random())
        LOG.warning(
            "The matchmaker lost its records (restarted?); registering again in %.1fs", delay
        )
        return delay

    def _backend_was_reset(self) -> bool:
        """True when the matchmaker lost its data since we last looked (Redis restart)."""
        if self._generation_key is None or not self._records:
            return False
        channel = self._channel.times_up() if self._channel is not None else None
        if not generation_check_due(channel, self._checked_up, time.monotonic() - self._checked_at):
            return False
        try:
            generation = self._matchmaker.generation(self._generation_key)
        except Exception:
            # An outage: the refresh loop's backoff deals with it. Not checked: asked
            # again next tick, even if the channel came up meanwhile.
            return False
        self._checked_up, self._checked_at = channel, time.monotonic()
        previous, self._generation = self._generation, generation
        return previous is not None and generation != previous

    def _refresh_all(self) -> float:
        """Register every record again; returns the seconds until the next refresh."""
        with self._lock:
            records = list(self._records)
        try:
            for key, record in records:
                self._matchmaker.register(key, record, self._expire)
                self._undo_if_removed(key, record)
        except Exception as exc:  # the thread must survive anything a plugin raises
            metrics.incr("matchmaker_errors")
            if self._retry_pauses is None:
                self._retry_pauses = _REFRESH_BACKOFF.delays()
            pause = next(self._retry_pauses)
            LOG.error("Matchmaker refresh failed (%s); retrying in %.0fs", exc, pause)
            return pause
        if self._retry_pauses is not None:
            self._retry_pauses = None
            LOG.info("Matchmaker registrations restored (%d records)", len(records))
        return self._update
