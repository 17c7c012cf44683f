"""The backends' pure helpers, and how the notification store is chosen from a matchmaker."""

from __future__ import annotations

import logging
import os
import stat
import threading
from pathlib import Path

import pytest
from redis import exceptions as redis_exc

from tests.support import make_conf, parse
from zmqdriver import keyfiles
from zmqdriver.backends import redis as redis_backend
from zmqdriver.backends import sqlitefile
from zmqdriver.backends.redis import (
    Credentials,
    Health,
    RedisBackend,
    RedisHost,
    check_query,
    format_address,
    parse_db,
)
from zmqdriver.backends.sentinel import Survey, no_master_error, refused_hint
from zmqdriver.backends.sqlitefile import SQLiteFile, embedded_directory, retries_within
from zmqdriver.backoff import Backoff
from zmqdriver.exceptions import BackendError, BackendUnavailable
from zmqdriver.matchmaker.base import MatchMaker
from zmqdriver.matchmaker.local import LocalMatchMaker
from zmqdriver.notify import notification_store_for
from zmqdriver.notify.redis_store import RedisNotificationStore
from zmqdriver.notify.sqlite_store import SQLiteNotificationStore

# --- pure helpers ---------------------------------------------------------------------


def test_retries_within_covers_the_deadline():
    backoff = Backoff(0.005, 0.2)
    retries = retries_within(backoff, 30.0)
    delays = [d for _, d in zip(range(retries + 1), backoff.delays())]
    assert sum(delays[:retries]) <= 30.0 < sum(delays)


def test_format_address_and_db():
    assert format_address("h", 1) == "h:1"
    assert format_address("fe80::1", 1) == "[fe80::1]:1"
    assert parse_db("") == 0
    with pytest.raises(BackendError, match="'x'"):
        parse_db("x")


def test_check_query_names_the_unknown_options():
    check_query({"tls": "true"}, ("tls",), "Redis")
    with pytest.raises(BackendError, match="Unknown option.*b, z.*accepted: tls"):
        check_query({"z": "1", "b": "2", "tls": "true"}, ("tls",), "Redis")


def test_no_master_error_tells_an_outage_from_a_configuration_error():
    lost = ConnectionRefusedError("refused")
    down = Survey(unreachable=[("s1:1", lost)], down=[("s2:2", "s_down,master")])
    error = no_master_error("svc", down, tls=False)
    assert isinstance(error, BackendUnavailable)
    assert "s2:2 reports s_down,master" in str(error) and "s1:1" in str(error)

    unknown = Survey(unreachable=[("s1:1", lost)], unknown=[("s2:2", ["other"])])
    error = no_master_error("svc", unknown, tls=False)
    assert not isinstance(error, BackendUnavailable)
    assert "'svc'" in str(error) and "they monitor: other" in str(error)

    nobody = Survey(unreachable=[("s1:1", lost), ("s2:2", lost)])
    error = no_master_error("svc", nobody, tls=False)
    assert isinstance(error, BackendUnavailable)
    assert "no sentinel reachable" in str(error)

    assert isinstance(no_master_error("svc", Survey(), tls=False), BackendUnavailable)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _said(caplog) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records]


def test_health_says_each_change_of_the_connection_once(caplog):
    clock = _Clock()
    health = Health("Redis matchmaker", clock=clock)
    with caplog.at_level(logging.DEBUG, logger=redis_backend.LOG.name):
        for _ in range(3):
            health.answered("r1:6379")
        health.failed("r1:6379 unreachable: refused")
        health.failed("r1:6379 unreachable: refused")
        clock.now += 12
        health.answered("r1:6379")
        health.answered("r2:6379")
        health.failed("down")
        clock.now += 3
        health.answered("r1:6379")
    assert _said(caplog) == [
        (logging.INFO, "Redis matchmaker: connected to r1:6379"),
        (
            logging.WARNING,
            "Redis matchmaker: unreachable, retrying until it answers: r1:6379 unreachable: "
            "refused",
        ),
        (logging.INFO, "Redis matchmaker: r1:6379 is back after 12s unreachable"),
        (logging.INFO, "Redis matchmaker: failed over from r1:6379 to r2:6379"),
        (logging.WARNING, "Redis matchmaker: unreachable, retrying until it answers: down"),
        (
            logging.INFO,
            "Redis matchmaker: failed over from r2:6379 to r1:6379 after 3s unreachable",
        ),
    ]


class _FakeClient:
    """What RedisBackend.execute hands an operation: here, whether the host is up."""

    def __init__(self) -> None:
        self.up = True

    def ping(self) -> bool:
        if not self.up:
            raise redis_exc.ConnectionError("Connection refused")
        return True

    def close(self) -> None:
        pass


def test_a_backend_logs_its_connection_failover_outage_and_return(caplog):
    hosts = [
        RedisHost(_FakeClient(), address, Credentials(None, None), tls=False)
        for address in ("r1:6379", "r2:6379")
    ]
    backend = RedisBackend(hosts, db=0)
    ping = lambda client: client.ping()  # noqa: E731
    with caplog.at_level(logging.INFO, logger=redis_backend.LOG.name):
        backend.execute("ping", ping)
        hosts[0].client.up = False
        backend.execute("ping", ping)
        hosts[1].client.up = False
        with pytest.raises(BackendUnavailable):
            backend.execute("ping", ping)
        with pytest.raises(BackendUnavailable):
            backend.execute("ping", ping)
        hosts[1].client.up = True
        backend.execute("ping", ping)
    said = [message for _, message in _said(caplog)]
    assert said[:2] == [
        "Redis matchmaker: connected to r1:6379",
        "Redis matchmaker: failed over from r1:6379 to r2:6379",
    ]
    assert said[2].startswith("Redis matchmaker: unreachable, retrying until it answers: ")
    assert "r1:6379" in said[2] and "r2:6379" in said[2]
    assert said[3].startswith("Redis matchmaker: r2:6379 is back after ")
    assert len(said) == 4


def test_refused_hint_points_at_the_sentinel_password():
    refused = [("s1:1", redis_exc.AuthenticationError("invalid password"))]
    assert "sentinel_password" in refused_hint(refused)
    assert refused_hint([("s1:1", redis_exc.ResponseError("unknown command"))]) == ""


def test_warn_if_exposed(tmp_path: Path, caplog):
    key = tmp_path / "client.key"
    key.write_text("secret")
    os.chmod(key, 0o600)
    with caplog.at_level(logging.WARNING, logger=keyfiles.LOG.name):
        keyfiles.warn_if_exposed(str(key), "zmq_redis_tls_key_file")
        assert not caplog.records
        os.chmod(key, 0o640)
        keyfiles.warn_if_exposed(str(key), "zmq_redis_tls_key_file")
    [record] = caplog.records
    assert "zmq_redis_tls_key_file" in record.getMessage() and "0640" in record.getMessage()


def test_embedded_directory_is_private(tmp_path: Path):
    conf = make_conf(zmq_matchmaker_path=str(tmp_path / "private" / "matchmaker.sqlite"))
    directory = embedded_directory(conf)
    assert directory == str(tmp_path / "private")
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700


# --- the embedded files: waiting for a peer's lock ------------------------------------------

TABLE = ["CREATE TABLE IF NOT EXISTS t (n INTEGER)"]


def embedded_file(path: str) -> SQLiteFile:
    return SQLiteFile(path, "test file", 1, TABLE, ["t"])


def peer_holding_the_write_lock(path: str) -> tuple[threading.Event, threading.Thread]:
    """Another connection in a write transaction until the returned event is set."""
    holding, release = threading.Event(), threading.Event()

    def hold(conn) -> None:
        conn.execute("INSERT INTO t VALUES (1)")
        holding.set()
        release.wait(30)

    thread = threading.Thread(target=embedded_file(path).transaction, args=(hold,))
    thread.start()
    assert holding.wait(30)
    return release, thread


def test_a_writer_waits_for_a_peers_write_lock(tmp_path: Path, monkeypatch):
    path = str(tmp_path / "f.sqlite")
    writer = embedded_file(path)
    writer.execute("SELECT 1")  # the file exists, in WAL mode
    release, peer = peer_holding_the_write_lock(path)
    attempt = sqlitefile._lock_as_retryable

    def release_once_refused(statement):
        try:
            return attempt(statement)
        except sqlitefile._Locked:
            release.set()  # we were refused while it held the lock: let it finish
            raise

    monkeypatch.setattr(sqlitefile, "_lock_as_retryable", release_once_refused)
    writer.transaction(lambda conn: conn.execute("INSERT INTO t VALUES (2)"))
    peer.join(30)
    assert release.is_set()  # the lock was held when we first tried
    assert writer.execute("SELECT n FROM t ORDER BY n") == [(1,), (2,)]


def test_a_writer_gives_up_on_a_lock_held_too_long_and_says_so(tmp_path: Path, monkeypatch):
    path = str(tmp_path / "f.sqlite")
    writer = embedded_file(path)
    writer.execute("SELECT 1")
    monkeypatch.setattr(sqlitefile, "_BUSY_RETRIES", 3)
    release, peer = peer_holding_the_write_lock(path)
    try:
        with pytest.raises(BackendUnavailable, match=f"{path} failed: database is locked"):
            writer.transaction(lambda conn: conn.execute("INSERT INTO t VALUES (2)"))
    finally:
        release.set()
        peer.join(30)


# --- choosing the notification store --------------------------------------------------


class _PluginMatchMaker(MatchMaker):
    """A third-party matchmaker with no backend to share."""

    def register(self, key: str, record: str, expire: float) -> None:
        pass

    def unregister(self, key: str, record: str) -> None:
        pass

    def lookup(self, key: str) -> list[str]:
        return []


class _ContractOnePlugin(_PluginMatchMaker):
    def notification_store(self, retention, redelivery):
        raise AssertionError("contract 2 never calls this")


@pytest.fixture
def embedded_conf(tmp_path: Path):
    return make_conf(zmq_matchmaker_path=str(tmp_path / "mm" / "matchmaker.sqlite"))


def test_embedded_matchmaker_gets_the_embedded_store_beside_it(embedded_conf, caplog):
    mm = LocalMatchMaker(embedded_conf, parse(embedded_conf, "zmq://"))
    try:
        with caplog.at_level(logging.WARNING):
            store = notification_store_for(mm, embedded_conf)
        assert isinstance(store, SQLiteNotificationStore)
        assert store.path == os.path.join(os.path.dirname(mm.path), "notifications.sqlite")
        assert not caplog.records  # the expected choice, nothing to say
        store.close()
    finally:
        mm.close()


@pytest.mark.parametrize("plugin", [_PluginMatchMaker, _ContractOnePlugin, object])
def test_a_plugin_without_a_backend_falls_back_to_the_embedded_store(plugin, embedded_conf, caplog):
    mm = plugin(embedded_conf, None) if plugin is not object else object()
    with caplog.at_level(logging.WARNING, logger="zmqdriver.notify"):
        store = notification_store_for(mm, embedded_conf)
    assert isinstance(store, SQLiteNotificationStore)
    store.close()
    [record] = caplog.records
    assert "embedded store" in record.getMessage()
    if plugin is _ContractOnePlugin:
        assert "notification_store()" in record.getMessage()


def test_a_redis_backend_carries_the_notifications(redis_url):
    conf = make_conf()
    backend = RedisBackend.from_url(conf, parse(conf, redis_url))

    class Plugin(_PluginMatchMaker):
        pass

    mm = Plugin(conf, None)
    mm.backend = backend
    try:
        store = notification_store_for(mm, conf)
        assert isinstance(store, RedisNotificationStore)
        store.subscribe(["backends-stream"], "pool", "me")
        store.append("backends-stream", '{"n": 1}')
        [message] = store.read(["backends-stream"], "pool", "me", 1, 5.0)
        assert message.payload == '{"n": 1}'
    finally:
        backend.close()
