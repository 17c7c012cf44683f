"""Matchmaker semantics, run against the embedded store and a real Redis.

The Redis cases use the session's own redis-server (tests/redis_fixture.py);
a few start a second, throwaway server and kill it by PID afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import pytest

from harness.net import free_port
from harness.redis_server import RedisServer
from harness.wait import eventually
from tests.support import make_conf, parse, throwaway_servers
from zmqdriver import matchmaker
from zmqdriver.backends.redis import RedisBackend
from zmqdriver.matchmaker.etcd import EtcdMatchMaker
from zmqdriver.matchmaker.local import LocalMatchMaker
from zmqdriver.matchmaker.redis import RedisMatchMaker

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY = "zmqdriver/exchange/topic"
GONE_TIMEOUT = 10.0

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def extra_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start throwaway redis-servers (with extra arguments); killed by PID at the end."""
    yield from throwaway_servers(RedisServer, tmp_path, "redis")


@pytest.fixture
def closing() -> Iterator[Callable[[matchmaker.MatchMaker], matchmaker.MatchMaker]]:
    """Close the matchmakers a test made, even when it fails."""
    made: list[matchmaker.MatchMaker] = []
    yield lambda mm: made.append(mm) or mm
    for mm in made:
        mm.close()


@pytest.fixture(params=["local", "redis", "etcd"])
def new_matchmaker(request, tmp_path: Path, closing) -> Callable[[], matchmaker.MatchMaker]:
    """Factory of matchmakers sharing one store, as separate processes would."""
    if request.param == "local":
        conf = make_conf(zmq_matchmaker_path=str(tmp_path / "mm" / "matchmaker.sqlite"))
        url = "zmq://"
        cls: type[matchmaker.MatchMaker] = LocalMatchMaker
    elif request.param == "etcd":
        conf = make_conf()
        url = request.getfixturevalue("etcd_url")
        cls = EtcdMatchMaker
    else:
        conf = make_conf()
        url = request.getfixturevalue("redis_url")
        cls = RedisMatchMaker
    return lambda: closing(cls(conf, parse(conf, url)))


@pytest.fixture
def mm(new_matchmaker) -> matchmaker.MatchMaker:
    return new_matchmaker()


@pytest.fixture
def redis_mm(redis_url: str, closing) -> Callable[..., RedisMatchMaker]:
    """Factory of Redis matchmakers for a URL (the session's Redis by default)."""

    def make(url: str = redis_url, **overrides) -> RedisMatchMaker:
        conf = make_conf(**overrides)
        return closing(RedisMatchMaker(conf, parse(conf, url)))

    return make


# --- semantics shared by every matchmaker -------------------------------------------


def test_register_lookup(mm):
    assert mm.lookup(KEY) == []
    mm.register(KEY, "tcp://10.0.0.1:5000", 60)
    assert mm.lookup(KEY) == ["tcp://10.0.0.1:5000"]


def test_lookup_sorted_and_unique(mm):
    # Registered out of order, with different expiries, one of them twice.
    mm.register(KEY, "c:3", 0)
    mm.register(KEY, "a:1", 30)
    mm.register(KEY, "b:2", 60)
    mm.register(KEY, "a:1", 90)
    assert mm.lookup(KEY) == ["a:1", "b:2", "c:3"]


def test_reregister_refreshes(mm):
    mm.register(KEY, "a:1", 0.3)
    mm.register(KEY, "a:1", 60)
    mm.register(KEY, "probe:1", 0.3)
    # Once the probe registered after the first expiry is gone, so would a:1 be.
    assert eventually(lambda: "probe:1" not in mm.lookup(KEY), GONE_TIMEOUT)
    assert mm.lookup(KEY) == ["a:1"]


def test_unregister(mm):
    mm.register(KEY, "a:1", 60)
    mm.register(KEY, "b:2", 60)
    mm.unregister(KEY, "a:1")
    assert mm.lookup(KEY) == ["b:2"]
    mm.unregister(KEY, "b:2")
    assert mm.lookup(KEY) == []


def test_unregister_missing_is_noop(mm):
    mm.unregister(KEY, "nobody:1")
    mm.register(KEY, "a:1", 60)
    mm.unregister(KEY, "nobody:1")
    mm.unregister("zmqdriver/no/such/key", "a:1")
    assert mm.lookup(KEY) == ["a:1"]


def test_keys_are_independent(mm):
    mm.register("zmqdriver/x/t1", "a:1", 60)
    mm.register("zmqdriver/x/t2", "b:2", 60)
    mm.register("zmqdriver/x/t1.server", "c:3", 60)
    assert mm.lookup("zmqdriver/x/t1") == ["a:1"]
    assert mm.lookup("zmqdriver/x/t2") == ["b:2"]
    assert mm.lookup("zmqdriver/x/t1.server") == ["c:3"]
    mm.unregister("zmqdriver/x/t1", "a:1")
    assert mm.lookup("zmqdriver/x/t2") == ["b:2"]


def test_expiry(mm):
    mm.register(KEY, "a:1", 0.3)
    assert mm.lookup(KEY) == ["a:1"]
    assert eventually(lambda: mm.lookup(KEY) == [], GONE_TIMEOUT), "record did not expire"


def test_never_expires(mm):
    mm.register(KEY, "forever:1", 0)
    mm.register(KEY, "short:2", 0.3)
    assert eventually(lambda: "short:2" not in mm.lookup(KEY), GONE_TIMEOUT)
    assert mm.lookup(KEY) == ["forever:1"]


def skip_on_shared_leases(mm) -> None:
    """etcd: records registered with one TTL share a lease, refreshed together (tests/unit/
    test_etcd.py checks that instead); and etcd's shortest lease is about 2 s."""
    if isinstance(mm, EtcdMatchMaker):
        pytest.skip("etcd refreshes the records of one lease together; see test_etcd.py")


def test_refresh_keeps_record_alive(mm):
    skip_on_shared_leases(mm)
    mm.register(KEY, "a:1", 1.0)
    mm.register(KEY, "probe:2", 1.0)
    mm.register(KEY, "a:1", 1.0)
    # Keep refreshing a:1 until the probe, registered with it, has expired.
    while "probe:2" in mm.lookup(KEY):
        mm.register(KEY, "a:1", 1.0)
        time.sleep(0.05)
    assert mm.lookup(KEY) == ["a:1"]


def test_two_instances_share_records(new_matchmaker):
    first, second = new_matchmaker(), new_matchmaker()
    first.register(KEY, "a:1", 60)
    second.register(KEY, "b:2", 60)
    assert first.lookup(KEY) == second.lookup(KEY) == ["a:1", "b:2"]
    second.unregister(KEY, "a:1")
    assert first.lookup(KEY) == ["b:2"]


def test_threads(mm):
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                mm.register(KEY, f"t{n}:{i}", 60)
                mm.lookup(KEY)
        except BaseException as exc:  # collected for the main thread's assert
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(mm.lookup(KEY)) == 8 * 20


# --- loading by URL scheme ----------------------------------------------------------


@pytest.fixture
def entry_points_installed() -> None:
    names = {ep.name for ep in metadata.entry_points(group=matchmaker.NAMESPACE)}
    if not {"local", "redis"} <= names:
        pytest.fail(
            f"entry points of {matchmaker.NAMESPACE!r} not found (have {sorted(names)}): "
            "install the project with 'pip install -e .'",
            pytrace=False,
        )


@pytest.mark.usefixtures("entry_points_installed")
def test_load_local(tmp_path, closing):
    conf = make_conf(zmq_matchmaker_path=str(tmp_path / "mm.sqlite"))
    assert isinstance(closing(matchmaker.load(conf, parse(conf, "zmq://"))), LocalMatchMaker)


@pytest.mark.usefixtures("entry_points_installed")
def test_load_redis(redis_url, closing):
    conf = make_conf()
    mm = closing(matchmaker.load(conf, parse(conf, redis_url)))
    assert isinstance(mm, RedisMatchMaker)
    mm.register(KEY, "a:1", 60)
    assert mm.lookup(KEY) == ["a:1"]


@pytest.mark.usefixtures("entry_points_installed")
def test_load_unknown_scheme_lists_the_valid_names(caplog):
    conf = make_conf()
    with caplog.at_level(logging.DEBUG), pytest.raises(matchmaker.MatchMakerError) as info:
        matchmaker.load(conf, parse(conf, "zmq+nosuch://host:1"))
    message = str(info.value)
    assert message.startswith("Unknown matchmaker 'nosuch' in transport URL scheme 'zmq+nosuch'")
    assert "valid: zmq:// (local), zmq+etcd://, zmq+redis://, zmq+sentinel://" in message
    assert "tls" not in message and "\n" not in message
    assert "Could not load" not in caplog.text  # the error says it all, once


@pytest.mark.usefixtures("entry_points_installed")
def test_load_rediss_hints_at_the_tls_query_option(caplog):
    conf = make_conf()
    with caplog.at_level(logging.DEBUG), pytest.raises(matchmaker.MatchMakerError) as info:
        matchmaker.load(conf, parse(conf, "zmq+rediss://user:secret@host:6380/0"))
    message = str(info.value)
    assert "Unknown matchmaker 'rediss'" in message
    assert "valid: zmq:// (local), zmq+etcd://, zmq+redis://, zmq+sentinel://" in message
    assert "zmq+redis://...?tls=true" in message
    assert "secret" not in message
    assert "Could not load" not in caplog.text


# --- Redis specifics ----------------------------------------------------------------


def test_redis_unreachable_names_host_port(redis_mm):
    port = free_port()
    mm = redis_mm(f"zmq+redis://127.0.0.1:{port}", zmq_matchmaker_timeout=2.0)
    for operation in (
        lambda: mm.register(KEY, "a:1", 60),
        lambda: mm.lookup(KEY),
        lambda: mm.unregister(KEY, "a:1"),
    ):
        with pytest.raises(matchmaker.MatchMakerUnavailable) as info:
            operation()
        assert f"Redis matchmaker at 127.0.0.1:{port} unreachable" in str(info.value)


def test_redis_all_hosts_unreachable_names_each(redis_mm):
    port1, port2 = free_port(), free_port()
    mm = redis_mm(f"zmq+redis://127.0.0.1:{port1},127.0.0.1:{port2}")
    with pytest.raises(matchmaker.MatchMakerUnavailable) as info:
        mm.lookup(KEY)
    assert f"127.0.0.1:{port1}" in str(info.value)
    assert f"127.0.0.1:{port2}" in str(info.value)


def test_redis_first_host_dead_second_used(redis_mm, redis_server):
    mm = redis_mm(f"zmq+redis://127.0.0.1:{free_port()},127.0.0.1:{redis_server.port}")
    mm.register(KEY, "a:1", 60)
    assert mm.lookup(KEY) == ["a:1"]
    with redis_server.client(decode_responses=True) as client:
        assert client.zrange(KEY, 0, -1) == ["a:1"]


def test_redis_fails_over_when_current_host_dies(redis_mm, redis_server, extra_redis):
    first = extra_redis()
    mm = redis_mm(f"zmq+redis://127.0.0.1:{first.port},127.0.0.1:{redis_server.port}")
    mm.register(KEY, "on-first:1", 60)
    assert mm.lookup(KEY) == ["on-first:1"]
    first.stop()
    # The second host has none of the first one's data; servers re-register.
    assert mm.lookup(KEY) == []
    mm.register(KEY, "on-second:1", 60)
    assert mm.lookup(KEY) == ["on-second:1"]


def test_redis_stays_on_host_it_failed_over_to(redis_mm, redis_server, extra_redis):
    first = extra_redis()
    mm = redis_mm(f"zmq+redis://127.0.0.1:{first.port},127.0.0.1:{redis_server.port}")
    first.stop()
    mm.register(KEY, "a:1", 60)
    # The first host returns empty: going back to it would hide every record.
    first.start()
    assert mm.lookup(KEY) == ["a:1"]
    with first.client() as client:
        assert client.dbsize() == 0


def test_redis_survives_restart(redis_mm, redis_server):
    mm = redis_mm(zmq_matchmaker_timeout=2.0)
    mm.register(KEY, "a:1", 60)
    redis_server.stop()
    try:
        with pytest.raises(matchmaker.MatchMakerUnavailable, match=str(redis_server.port)):
            mm.lookup(KEY)
    finally:
        redis_server.start()  # other users of the session server need it back
    # Same pool, stale connections, and a server that lost its script cache.
    assert mm.lookup(KEY) == []
    mm.register(KEY, "a:1", 60)
    assert mm.lookup(KEY) == ["a:1"]


def test_redis_wrong_password(redis_mm, extra_redis):
    server = extra_redis("--requirepass", "s3cret")
    good = redis_mm(f"zmq+redis://:s3cret@127.0.0.1:{server.port}")
    good.register(KEY, "a:1", 60)
    assert good.lookup(KEY) == ["a:1"]

    bad = redis_mm(f"zmq+redis://:wrong-pw@127.0.0.1:{server.port}")
    with pytest.raises(matchmaker.MatchMakerError) as info:
        bad.lookup(KEY)
    message = str(info.value)
    assert not isinstance(info.value, matchmaker.MatchMakerUnavailable)
    assert f"127.0.0.1:{server.port}" in message
    assert "'default'" in message
    assert "wrong-pw" not in message

    anonymous = redis_mm(f"zmq+redis://127.0.0.1:{server.port}")
    with pytest.raises(matchmaker.MatchMakerError, match="requires authentication"):
        anonymous.register(KEY, "b:2", 60)


def test_redis_acl_user(redis_mm, extra_redis):
    server = extra_redis()
    with server.client() as client:
        client.acl_setuser("zmq", enabled=True, passwords=["+pw1"], keys=["*"], commands=["+@all"])
    good = redis_mm(f"zmq+redis://zmq:pw1@127.0.0.1:{server.port}")
    good.register(KEY, "a:1", 60)
    assert good.lookup(KEY) == ["a:1"]
    bad = redis_mm(f"zmq+redis://zmq:nope@127.0.0.1:{server.port}")
    with pytest.raises(matchmaker.MatchMakerError, match="user 'zmq'") as info:
        bad.lookup(KEY)
    assert "nope" not in str(info.value)


def test_redis_db_from_url(redis_mm, redis_server):
    base = redis_server.url
    db1, db1_again, db2 = redis_mm(base + "/1"), redis_mm(base + "/1"), redis_mm(base + "/2")
    db1.register(KEY, "a:1", 60)
    assert db2.lookup(KEY) == []
    assert db1_again.lookup(KEY) == ["a:1"]
    assert redis_mm(base).lookup(KEY) == []
    with redis_server.client(db=1) as client:
        assert client.exists(KEY) == 1


@pytest.mark.parametrize("db", ["x", "-1"])
def test_redis_invalid_db(redis_url, db):
    conf = make_conf()
    with pytest.raises(matchmaker.MatchMakerError, match=repr(db)):
        RedisMatchMaker(conf, parse(conf, f"{redis_url}/{db}"))


def test_redis_db_out_of_range(redis_mm, redis_url):
    mm = redis_mm(redis_url + "/999")
    with pytest.raises(matchmaker.MatchMakerError, match="db 999") as info:
        mm.lookup(KEY)
    assert not isinstance(info.value, matchmaker.MatchMakerUnavailable)


def test_redis_user_without_password(redis_url):
    conf = make_conf()
    url = redis_url.replace("zmq+redis://", "zmq+redis://someone@")
    with pytest.raises(matchmaker.MatchMakerError, match="someone"):
        RedisMatchMaker(conf, parse(conf, url))


def test_redis_default_host_and_port():
    conf = make_conf()
    hosts = RedisBackend.from_url(conf, parse(conf, "zmq+redis://")).hosts
    assert [h.address for h in hosts] == ["127.0.0.1:6379"]
    hosts = RedisBackend.from_url(conf, parse(conf, "zmq+redis://:7000,h2")).hosts
    assert [h.address for h in hosts] == ["127.0.0.1:7000", "h2:6379"]


def test_redis_scores_use_server_clock(redis_mm, redis_server):
    mm = redis_mm()
    mm.register(KEY, "a:1", 5)
    mm.register(KEY, "forever:2", 0)
    with redis_server.client(decode_responses=True) as client:
        seconds, micros = client.time()
        now_ms = seconds * 1000 + micros // 1000
        assert now_ms < client.zscore(KEY, "a:1") <= now_ms + 5000
        assert client.zscore(KEY, "forever:2") == float("inf")


def test_redis_key_expiry_follows_longest_record(redis_mm, redis_server):
    mm = redis_mm()
    with redis_server.client() as client:
        mm.register(KEY, "a:1", 30)
        assert 20_000 < client.pttl(KEY) <= 30_000
        mm.register(KEY, "forever:2", 0)
        assert client.pttl(KEY) == -1  # persistent while a record never expires
        mm.unregister(KEY, "forever:2")
        assert 20_000 < client.pttl(KEY) <= 30_000
        # Records of a server that died: the key vanishes with no lookup at all.
        mm.register("zmqdriver/dead", "dead:1", 0.3)
        assert client.exists("zmqdriver/dead") == 1
        assert eventually(lambda: client.exists("zmqdriver/dead") == 0, GONE_TIMEOUT)


def test_redis_no_prefix_added(redis_mm, redis_server):
    redis_mm().register("exactly/this", "a:1", 60)
    with redis_server.client(decode_responses=True) as client:
        assert client.keys("*") == ["exactly/this"]


# --- embedded store specifics -------------------------------------------------------


def test_local_private_permissions(tmp_path, closing):
    path = tmp_path / "private" / "matchmaker.sqlite"
    conf = make_conf(zmq_matchmaker_path=str(path))
    closing(LocalMatchMaker(conf, parse(conf, "zmq://"))).register(KEY, "a:1", 60)
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


_CHILD = """
import json, sys
import oslo_messaging
from oslo_config import cfg
from zmqdriver import options
from zmqdriver.matchmaker.etcd import EtcdMatchMaker
from zmqdriver.matchmaker.local import LocalMatchMaker
conf = cfg.ConfigOpts()
options.register(conf)
conf([])
conf.set_override("zmq_matchmaker_path", sys.argv[1], group=options.GROUP)
mm = LocalMatchMaker(conf, oslo_messaging.TransportURL.parse(conf, "zmq://"))
mm.register(sys.argv[2], "child:2", 60)
print(json.dumps(mm.lookup(sys.argv[2])), flush=True)
sys.stdin.read()  # stay alive, like a server, until the test lets go
"""


def test_local_shared_with_another_process(tmp_path, closing):
    path = tmp_path / "mm" / "matchmaker.sqlite"
    conf = make_conf(zmq_matchmaker_path=str(path))
    mm = closing(LocalMatchMaker(conf, parse(conf, "zmq://")))
    mm.register(KEY, "parent:1", 60)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), *sys.path]))
    child = subprocess.Popen(
        [sys.executable, "-W", "ignore", "-c", _CHILD, str(path), KEY],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        line = child.stdout.readline()
        assert line, child.stderr.read()
        assert json.loads(line) == ["child:2", "parent:1"]  # the child sees ours
        assert mm.lookup(KEY) == ["child:2", "parent:1"]  # and we see the child's
    finally:
        child.stdin.close()
        child.wait(60)
        child.stdout.close()
        child.stderr.close()
    # Same host: a dead process's records go at the next lookup, not at expiry.
    assert mm.lookup(KEY) == ["parent:1"]


def test_fixture_server_is_private(redis_server):
    assert redis_server.port != 6379
    assert redis_server.running
    os.kill(redis_server.pid, 0)  # the PID the fixture kills at teardown is alive


# --- listing for zmqdriver-status ----------------------------------------------------


def test_records_lists_live_records_under_a_prefix_with_their_expiry(mm):
    skip_on_shared_leases(mm)
    prefix = f"list-{os.getpid()}-{time.monotonic_ns()}"
    mm.register(f"{prefix}/rpc/openstack/a", "r1", 60)
    mm.register(f"{prefix}/rpc/openstack/a", "r2", 0)
    mm.register(f"{prefix}/rpc/openstack/b", "r3", 60)
    mm.register(f"{prefix}/rpc/openstack/gone", "r4", 0.05)
    mm.register(f"other-{prefix}/rpc/openstack/a", "r5", 60)
    time.sleep(0.1)
    listed = mm.records(f"{prefix}/")
    assert [(r.key.rsplit("/", 1)[1], r.record) for r in listed] == [
        ("a", "r1"),
        ("a", "r2"),
        ("b", "r3"),
    ]
    assert 50 < listed[0].expires_in <= 60
    assert listed[1].expires_in is None


def test_records_treats_glob_characters_in_the_prefix_literally(mm):
    prefix = f"glob*[{time.monotonic_ns()}]"
    mm.register(f"{prefix}/rpc/x", "r1", 60)
    mm.register(f"globZZ/rpc/{prefix}", "r2", 60)
    assert [r.record for r in mm.records(prefix)] == ["r1"]


def test_a_plugin_without_listing_says_so():
    class Minimal(matchmaker.MatchMaker):
        def register(self, key, record, expire):
            pass

        def unregister(self, key, record):
            pass

        def lookup(self, key):
            return []

    with pytest.raises(matchmaker.MatchMakerError, match="not supported by this plugin"):
        Minimal(None, None).records("x")
