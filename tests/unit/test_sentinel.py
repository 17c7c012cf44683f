"""The Redis Sentinel matchmaker against real sentinels (tests/sentinel_fixture.py).

Most tests share the session's healthy deployment; the failover and password
tests start private ones (``sentinel_cluster_factory``) because they break or
reconfigure them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib import metadata

import pytest

from harness.net import free_port
from harness.wait import eventually
from tests.sentinel_fixture import SERVICE, SentinelCluster
from tests.support import make_conf, parse
from zmqdriver import matchmaker
from zmqdriver.backends.sentinel import SentinelBackend
from zmqdriver.matchmaker.redis import RedisMatchMaker
from zmqdriver.matchmaker.sentinel import SentinelMatchMaker
from zmqdriver.notify import notification_store_for
from zmqdriver.notify.redis_store import RedisNotificationStore

KEY = "zmqdriver/exchange/topic"
GONE_TIMEOUT = 10.0
# Detection (1 s down-after) + agreement + promotion is a few seconds; be generous.
FAILOVER_DEADLINE = 60.0

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]


@pytest.fixture
def sentinel_mm() -> Iterator[Callable[..., SentinelMatchMaker]]:
    """Factory of Sentinel matchmakers for a URL; closed at the end even when a test fails."""
    made: list[SentinelMatchMaker] = []

    def make(url: str, **overrides) -> SentinelMatchMaker:
        conf = make_conf(**overrides)
        mm = SentinelMatchMaker(conf, parse(conf, url))
        made.append(mm)
        return mm

    yield make
    for mm in made:
        mm.close()


@pytest.fixture
def mm(sentinel_url: str, sentinel_mm) -> SentinelMatchMaker:
    return sentinel_mm(sentinel_url)


# --- the matchmaker contract through Sentinel ---------------------------------------


def test_register_lookup_unregister(mm):
    assert mm.lookup(KEY) == []
    mm.register(KEY, "b:2", 60)
    mm.register(KEY, "a:1", 0)
    mm.register(KEY, "b:2", 90)
    assert mm.lookup(KEY) == ["a:1", "b:2"]
    mm.unregister(KEY, "a:1")
    mm.unregister(KEY, "nobody:1")
    assert mm.lookup(KEY) == ["b:2"]


def test_expiry(mm):
    mm.register(KEY, "forever:1", 0)
    mm.register(KEY, "short:2", 0.3)
    assert mm.lookup(KEY) == ["forever:1", "short:2"]
    assert eventually(lambda: "short:2" not in mm.lookup(KEY), GONE_TIMEOUT), (
        "record did not expire"
    )
    assert mm.lookup(KEY) == ["forever:1"]


def test_two_instances_share_records(sentinel_url, sentinel_mm):
    first, second = sentinel_mm(sentinel_url), sentinel_mm(sentinel_url)
    first.register(KEY, "a:1", 60)
    assert second.lookup(KEY) == ["a:1"]


def test_records_live_on_the_master(mm, sentinel_cluster):
    mm.register(KEY, "a:1", 60)
    with sentinel_cluster.current_master().client(decode_responses=True) as client:
        assert client.zrange(KEY, 0, -1) == ["a:1"]


def test_db_from_query(sentinel_url, sentinel_mm, sentinel_cluster):
    db3 = sentinel_mm(sentinel_url + "?db=3")
    db3.register(KEY, "a:1", 60)
    assert sentinel_mm(sentinel_url).lookup(KEY) == []
    assert sentinel_mm(sentinel_url + "?db=3").lookup(KEY) == ["a:1"]
    with sentinel_cluster.current_master().client(db=3) as client:
        assert client.exists(KEY) == 1


def test_a_dead_sentinel_is_skipped(sentinel_cluster, sentinel_url, sentinel_mm):
    dead = f"127.0.0.1:{free_port()}"
    url = sentinel_url.replace("zmq+sentinel://", f"zmq+sentinel://{dead},")
    mm = sentinel_mm(url)
    mm.register(KEY, "a:1", 60)
    assert mm.lookup(KEY) == ["a:1"]


def test_notifications_through_sentinel(mm):
    # The store shares the matchmaker's backend: the master Sentinel names.
    store = notification_store_for(
        mm, make_conf(zmq_notification_retention_count=10, zmq_notification_retention_age=60)
    )
    assert isinstance(store, RedisNotificationStore)
    try:
        store.subscribe(["notifications.info"], "pool", "listener1")
        store.append("notifications.info", '{"message": 1}')
        [message] = store.read(["notifications.info"], "pool", "listener1", 10, 1.0)
        assert message.payload == '{"message": 1}'
        store.ack(message, "pool")
    finally:
        store.close()


@pytest.fixture
def entry_point_installed() -> None:
    names = {ep.name for ep in metadata.entry_points(group=matchmaker.NAMESPACE)}
    if "sentinel" not in names:
        pytest.fail(
            f"entry point 'sentinel' of {matchmaker.NAMESPACE!r} not found (have "
            f"{sorted(names)}): install the project with 'pip install -e .'",
            pytrace=False,
        )


@pytest.mark.usefixtures("entry_point_installed")
def test_load_by_url(sentinel_url):
    conf = make_conf()
    mm = matchmaker.load(conf, parse(conf, sentinel_url))
    try:
        assert isinstance(mm, SentinelMatchMaker)
        assert isinstance(mm, RedisMatchMaker)  # records and scripts: inherited
        assert isinstance(mm.backend, SentinelBackend)
        mm.register(KEY, "a:1", 60)
        assert mm.lookup(KEY) == ["a:1"]
    finally:
        mm.close()


# --- URL parsing (no network) -------------------------------------------------------


def test_sentinel_addresses_and_defaults():
    conf = make_conf()
    backend = SentinelBackend.from_url(conf, parse(conf, "zmq+sentinel://h1,h2:1234,:7000/svc"))
    assert backend.sentinel_addresses == [("h1", 26379), ("h2", 1234), ("127.0.0.1", 7000)]
    assert backend.service == "svc"
    assert backend.db == 0
    backend = SentinelBackend.from_url(conf, parse(conf, "zmq+sentinel:///svc"))
    assert backend.sentinel_addresses == [("127.0.0.1", 26379)]


@pytest.mark.parametrize(
    "url", ["zmq+sentinel://127.0.0.1:26379", "zmq+sentinel://127.0.0.1:26379/"]
)
def test_missing_service_name(url):
    conf = make_conf()
    with pytest.raises(matchmaker.MatchMakerError, match="names no master service") as info:
        SentinelBackend.from_url(conf, parse(conf, url))
    assert "/<service>" in str(info.value)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?db=x", "'x'"),
        ("?db=-1", "'-1'"),
        ("?dbb=1", "dbb"),
        ("?sentinel_username=sentry", "sentry"),
    ],
)
def test_invalid_query(query, message):
    conf = make_conf()
    with pytest.raises(matchmaker.MatchMakerError, match=message):
        SentinelBackend.from_url(conf, parse(conf, f"zmq+sentinel://127.0.0.1:26379/svc{query}"))


def test_master_user_without_password():
    conf = make_conf()
    with pytest.raises(matchmaker.MatchMakerError, match="someone"):
        SentinelBackend.from_url(conf, parse(conf, "zmq+sentinel://someone@h1:26379/svc"))


def test_conflicting_master_credentials():
    conf = make_conf()
    url = "zmq+sentinel://:pw1@h1:26379,:pw2@h2:26379/svc"
    with pytest.raises(matchmaker.MatchMakerError, match="different credentials") as info:
        SentinelBackend.from_url(conf, parse(conf, url))
    assert "pw1" not in str(info.value)


# --- errors -------------------------------------------------------------------------


def test_no_sentinel_reachable_names_each(sentinel_mm):
    ports = [free_port() for _ in range(3)]
    hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
    mm = sentinel_mm(f"zmq+sentinel://{hosts}/{SERVICE}", zmq_matchmaker_timeout=2.0)
    for operation in (
        lambda: mm.register(KEY, "a:1", 60),
        lambda: mm.lookup(KEY),
        lambda: mm.unregister(KEY, "a:1"),
    ):
        with pytest.raises(matchmaker.MatchMakerUnavailable) as info:
            operation()
        message = str(info.value)
        assert "no sentinel reachable" in message
        for port in ports:
            assert f"127.0.0.1:{port}" in message


def test_unknown_service_name(sentinel_cluster, sentinel_mm):
    mm = sentinel_mm(sentinel_cluster.url.replace(f"/{SERVICE}", "/nosuchmaster"))
    with pytest.raises(matchmaker.MatchMakerError) as info:
        mm.lookup(KEY)
    assert not isinstance(info.value, matchmaker.MatchMakerUnavailable)
    message = str(info.value)
    assert "'nosuchmaster'" in message
    assert SERVICE in message  # what the sentinels do monitor, to spot the typo
    for sentinel in sentinel_cluster.sentinels:
        assert f"127.0.0.1:{sentinel.port}" in message


def test_unknown_service_with_a_dead_sentinel_is_still_a_config_error(
    sentinel_cluster, sentinel_mm
):
    dead = free_port()
    url = sentinel_cluster.url.replace("zmq+sentinel://", f"zmq+sentinel://127.0.0.1:{dead},")
    mm = sentinel_mm(url.replace(f"/{SERVICE}", "/nosuchmaster"))
    with pytest.raises(matchmaker.MatchMakerError, match="nosuchmaster") as info:
        mm.register(KEY, "a:1", 60)
    assert not isinstance(info.value, matchmaker.MatchMakerUnavailable)
    assert f"127.0.0.1:{dead}" in str(info.value)


def test_plain_redis_is_not_a_sentinel(redis_server, sentinel_mm):
    # zmq+sentinel:// pointed at the Redis server itself: a configuration error.
    mm = sentinel_mm(f"zmq+sentinel://{redis_server.host}:{redis_server.port}/{SERVICE}")
    with pytest.raises(matchmaker.MatchMakerError) as info:
        mm.lookup(KEY)
    assert not isinstance(info.value, matchmaker.MatchMakerUnavailable)
    assert f"{redis_server.host}:{redis_server.port}" in str(info.value)
    assert "SENTINEL" in str(info.value).upper()


def test_passwords(sentinel_cluster_factory, sentinel_mm):
    cluster: SentinelCluster = sentinel_cluster_factory(
        replicas=0, sentinels=1, quorum=1, password="master-pw", sentinel_password="sentry-pw"
    )
    sentinel = f"127.0.0.1:{cluster.sentinels[0].port}"
    good = sentinel_mm(cluster.url)
    good.register(KEY, "a:1", 60)
    assert good.lookup(KEY) == ["a:1"]

    # The master's password is wrong: a configuration error, not an outage.
    bad_master = sentinel_mm(cluster.url.replace("master-pw", "wrong-pw"))
    with pytest.raises(matchmaker.MatchMakerError, match="'default'") as info:
        bad_master.lookup(KEY)
    assert not isinstance(info.value, matchmaker.MatchMakerUnavailable)
    assert "wrong-pw" not in str(info.value)

    no_master_pw = sentinel_mm(cluster.url.replace(":master-pw@", ""))
    with pytest.raises(matchmaker.MatchMakerError, match="requires authentication"):
        no_master_pw.lookup(KEY)

    # The sentinel's password is missing or wrong.
    for url in (
        cluster.url.replace("?sentinel_password=sentry-pw", ""),
        cluster.url.replace("sentry-pw", "wrong-sentry"),
    ):
        with pytest.raises(matchmaker.MatchMakerError, match="sentinel_password") as info:
            sentinel_mm(url).register(KEY, "b:2", 60)
        assert not isinstance(info.value, matchmaker.MatchMakerUnavailable)
        assert sentinel in str(info.value)
        assert "wrong-sentry" not in str(info.value)
        assert "master-pw" not in str(info.value)


# --- failover -----------------------------------------------------------------------


def test_failover_keeps_working_and_keeps_replicated_records(sentinel_cluster_factory, sentinel_mm):
    cluster: SentinelCluster = sentinel_cluster_factory()
    mm = sentinel_mm(cluster.url, zmq_matchmaker_timeout=2.0)
    mm.register(KEY, "before:1", 0)
    mm.register(KEY, "before:2", 600)
    # Replication is asynchronous: make sure the replica has both records
    # before the master dies, or the test would depend on timing.
    with cluster.current_master().client() as client:
        assert client.wait(1, 1000) == 1

    old = cluster.kill_master()
    # The master is gone and not replaced yet (that takes over a second): an outage.
    with pytest.raises(matchmaker.MatchMakerUnavailable):
        mm.lookup(KEY)
    new = cluster.wait_for_promotion()
    assert new.port != old.port

    failures: list[str] = []

    def register_and_lookup() -> bool:
        # Errors other than MatchMakerUnavailable propagate and fail the test.
        try:
            mm.register(KEY, "after:1", 600)
            return "after:1" in mm.lookup(KEY)
        except matchmaker.MatchMakerUnavailable as exc:
            failures.append(str(exc))
            return False

    assert eventually(register_and_lookup, FAILOVER_DEADLINE), failures[-3:]
    assert mm.lookup(KEY) == ["after:1", "before:1", "before:2"]
    with new.client(decode_responses=True) as client:
        assert sorted(client.zrange(KEY, 0, -1)) == ["after:1", "before:1", "before:2"]
