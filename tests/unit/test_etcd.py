"""The etcd matchmaker and its backend: URL, key layout and errors, then a real etcd.

The shared matchmaker semantics run on etcd in test_matchmaker.py; here is what is
etcd's own: leases (one per process, refreshed together, lost at once), failover
between members, outages, a member that comes back empty, credentials.
Real-etcd cases use the session's own member (tests/etcd_fixture.py), or a
throwaway one killed by PID.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import pytest

from harness.etcd_server import EtcdCluster, EtcdServer
from harness.net import free_port
from harness.wait import eventually, wait_until
from tests.support import make_conf, parse, throwaway_servers
from zmqdriver import addressing, matchmaker
from zmqdriver.backends.etcd import EtcdBackend, classify, etcd_errors
from zmqdriver.discovery import Directory, Registrar
from zmqdriver.exceptions import BackendError, BackendUnavailable
from zmqdriver.matchmaker.etcd import (
    EtcdMatchMaker,
    lease_ttl,
    matchmaker_key,
    record_key,
    records_prefix,
)
from zmqdriver.notify import notification_store_for
from zmqdriver.notify.sqlite_store import SQLiteNotificationStore

pytest.importorskip("etcd3gw")

pytestmark = pytest.mark.timeout(120)

KEY = "zmqdriver/rpc/openstack/compute"


def backend(url: str, **options) -> EtcdBackend:
    conf = make_conf(**options)
    return EtcdBackend.from_url(conf, parse(conf, url))


# --- the URL ---------------------------------------------------------------------------


def test_default_member_is_loopback_2379():
    [host] = backend("zmq+etcd://").hosts
    assert host.address == "127.0.0.1:2379"
    assert host.client.base_url == "http://127.0.0.1:2379"


def test_several_members_in_order():
    hosts = backend("zmq+etcd://e1:2379,e2:2380,[::1]:2381").hosts
    assert [host.address for host in hosts] == ["e1:2379", "e2:2380", "[::1]:2381"]


@pytest.mark.parametrize(
    "url, message",
    [
        ("zmq+etcd://h:2379?db=1", "Unknown option"),
        ("zmq+etcd://h:2379?tls=maybe", "expected true or false"),
        ("zmq+etcd://h:2379/prefix", "zmq_matchmaker_prefix"),
        ("zmq+etcd://user@h:2379", "both a user and a password"),
    ],
)
def test_malformed_urls_are_configuration_errors(url, message):
    with pytest.raises(BackendError, match=message) as caught:
        backend(url)
    assert not isinstance(caught.value, BackendUnavailable)


def test_tls_from_the_url_or_the_option(tmp_path):
    assert backend("zmq+etcd://h:2379?tls=true").hosts[0].client.protocol == "https"
    assert backend("zmq+etcd://h:2379", zmq_etcd_tls_enabled=True).hosts[0].tls
    plain = backend("zmq+etcd://h:2379?tls=false", zmq_etcd_tls_enabled=True)
    assert plain.hosts[0].client.protocol == "http"


def test_tls_files_without_tls_say_which_option(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(BackendError, match="zmq_etcd_tls_enabled = true"):
        backend("zmq+etcd://h:2379", zmq_etcd_tls_ca_file=str(ca))


def test_a_missing_or_broken_ca_file_names_the_option(tmp_path):
    with pytest.raises(BackendError, match="zmq_etcd_tls_ca_file = .*no such file"):
        backend("zmq+etcd://h:2379?tls=true", zmq_etcd_tls_ca_file=str(tmp_path / "nope.pem"))
    broken = tmp_path / "ca.pem"
    broken.write_text("not a certificate")
    with pytest.raises(BackendError, match="zmq_etcd_tls_ca_file .*not usable for TLS"):
        backend("zmq+etcd://h:2379?tls=true", zmq_etcd_tls_ca_file=str(broken))


def test_a_client_certificate_needs_its_key(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(BackendError, match="go together"):
        backend("zmq+etcd://h:2379?tls=true", zmq_etcd_tls_cert_file=str(cert))


# --- the key layout --------------------------------------------------------------------


def test_record_keys_sit_under_their_matchmaker_key():
    etcd_key = record_key(KEY, '{"v": 1, "host": "10.0.0.1", "port": 5000}')
    assert etcd_key.startswith(records_prefix(KEY))
    assert matchmaker_key(etcd_key) == KEY
    assert record_key(KEY, "a") != record_key(KEY, "b")
    assert record_key(KEY, "a") == record_key(KEY, "a")


def test_a_server_key_never_falls_under_its_topic_key():
    # Components are URL-quoted: a server named "@" cannot fake the record separator.
    topic = addressing.rpc_key("zmqdriver", "openstack", "compute")
    server = addressing.rpc_key("zmqdriver", "openstack", "compute", "@")
    assert not record_key(server, "r").startswith(records_prefix(topic))
    assert matchmaker_key(record_key(server, "r")) == server


def test_lease_ttls_are_whole_seconds_and_never_zero():
    assert [lease_ttl(e) for e in (0.01, 1, 1.5, 60)] == [1, 1, 2, 60]
    assert lease_ttl(0) is None and lease_ttl(-1) is None


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error, text, kind",
    [
        ("ConnectionFailedError", "Connection refused", "unavailable"),
        ("ConnectionTimeoutError", "read timed out", "unavailable"),
        ("InternalServerError", '{"error":"etcdserver: no leader"}', "unavailable"),
        ("Etcd3Exception", '{"error":"etcdserver: user name is empty"}', "auth"),
        (
            "Etcd3Exception",
            '{"error":"etcdserver: authentication failed, invalid user ID or password"}',
            "auth",
        ),  # fmt: skip
        ("Etcd3Exception", '{"error":"etcdserver: invalid auth token"}', "token"),
        ("Etcd3Exception", '{"error":"etcdserver: permission denied"}', "auth"),
        ("Etcd3Exception", '{"error":"etcdserver: request is too large"}', "refused"),
        ("Etcd3Exception", "Client sent an HTTP request to an HTTPS server.", "tls needed"),
    ],
)
def test_classify(error, text, kind):
    assert classify(getattr(etcd_errors(), error)(text)) == kind


def test_unreachable_member_is_an_outage_naming_it():
    dead = backend(f"zmq+etcd://127.0.0.1:{free_port()}", zmq_matchmaker_timeout=1.0)
    with pytest.raises(BackendUnavailable, match=r"etcd matchmaker at 127\.0\.0\.1:\d+ unreach"):
        dead.get_prefix("x")


# --- a real etcd -----------------------------------------------------------------------


@pytest.fixture
def closing() -> Iterator[Callable]:
    made: list = []
    yield lambda thing: made.append(thing) or thing
    for thing in made:
        thing.close()


@pytest.fixture
def new_mm(etcd_url: str, closing) -> Callable[..., EtcdMatchMaker]:
    def make(url: str = etcd_url, **options) -> EtcdMatchMaker:
        conf = make_conf(**options)
        return closing(EtcdMatchMaker(conf, parse(conf, url)))

    return make


@pytest.fixture
def extra_etcd(tmp_path: Path) -> Iterator[Callable[..., EtcdServer]]:
    """Throwaway etcd members (with extra arguments); killed by PID at the end."""
    yield from throwaway_servers(EtcdServer, tmp_path, "etcd")


def leases_of(server: EtcdServer, prefix: str) -> dict[str, int]:
    """etcd key -> lease id (0 for none) of every key under ``prefix``."""
    return {
        meta["key"].decode(): int(meta.get("lease", 0))
        for _, meta in server.client().get_prefix(prefix)
    }


def test_loaded_by_the_zmq_etcd_scheme(etcd_url, closing):
    names = {ep.name for ep in metadata.entry_points(group=matchmaker.NAMESPACE)}
    if "etcd" not in names:
        pytest.fail("entry point 'etcd' not installed: pip install -e .", pytrace=False)
    conf = make_conf()
    mm = closing(matchmaker.load(conf, parse(conf, etcd_url)))
    assert isinstance(mm, EtcdMatchMaker)
    mm.register(KEY, "a:1", 60)
    assert mm.lookup(KEY) == ["a:1"]


def test_one_lease_carries_every_record_of_a_process(new_mm, etcd_server):
    mm = new_mm()
    mm.register(KEY, "a:1", 30)
    mm.register(KEY + "/host1", "a:1", 30)
    mm.register("zmqdriver/rpc/openstack/network", "a:1", 30)
    mm.register(KEY, "forever:1", 0)
    leases = leases_of(etcd_server, "zmqdriver/")
    assert len(leases) == 4
    assert leases[record_key(KEY, "forever:1")] == 0
    assert len({lease for lease in leases.values() if lease}) == 1
    # Another process (matchmaker) has its own.
    other = new_mm()
    other.register(KEY, "b:2", 30)
    assert (
        leases_of(etcd_server, record_key(KEY, "b:2"))[record_key(KEY, "b:2")]
        not in leases.values()
    )


def test_racing_registrations_share_one_lease(new_mm, etcd_server):
    mm = new_mm()
    threads = [
        threading.Thread(target=mm.register, args=(f"{KEY}/s{n}", "a:1", 30)) for n in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    leases = leases_of(etcd_server, "zmqdriver/")
    assert len(leases) == 8 and len(set(leases.values())) == 1


def test_a_refresh_renews_the_lease_without_writing_the_records_again(new_mm, etcd_server):
    mm = new_mm()
    mm.register(KEY, "a:1", 2)
    [(_, before)] = etcd_server.client().get_prefix(records_prefix(KEY))
    deadline = time.monotonic() + 4  # twice the lease: only the keepalives keep it
    while time.monotonic() < deadline:
        mm.register(KEY, "a:1", 2)
        time.sleep(0.2)
    [(_, after)] = etcd_server.client().get_prefix(records_prefix(KEY))
    assert after["mod_revision"] == before["mod_revision"]  # no new revision, no event


def test_a_process_that_stops_refreshing_loses_all_its_records_at_once(new_mm):
    mm, reader = new_mm(), new_mm()
    mm.register(KEY, "a:1", 1)
    mm.register(KEY + "/host1", "a:1", 1)
    reader.register(KEY, "alive:2", 60)
    both = wait_until(
        lambda: (
            (reader.lookup(KEY), reader.lookup(KEY + "/host1")) == (["alive:2"], [])
            and time.monotonic()
        ),
        timeout=10,
        what="the lease to run out",
    )
    assert both
    # Registering again after the loss works, on a new lease.
    mm.register(KEY, "a:1", 1)
    assert reader.lookup(KEY) == ["a:1", "alive:2"]


def test_close_revokes_the_lease_so_the_records_go_at_once(new_mm):
    mm, reader = new_mm(), new_mm()
    mm.register(KEY, "a:1", 60)
    mm.close()
    assert reader.lookup(KEY) == []


def test_listing_gives_the_lease_time_left(new_mm):
    mm = new_mm()
    mm.register(KEY, "a:1", 60)
    mm.register(KEY, "b:2", 0)
    mm.register("elsewhere/rpc/x/y", "c:3", 60)
    listed = mm.records("zmqdriver/")
    assert [(r.key, r.record) for r in listed] == [(KEY, "a:1"), (KEY, "b:2")]
    assert 50 < listed[0].expires_in <= 60
    assert listed[1].expires_in is None


def test_fails_over_to_the_next_member(etcd_url, etcd_server, closing):
    conf = make_conf(zmq_matchmaker_timeout=1.0)
    url = f"zmq+etcd://127.0.0.1:{free_port()},{etcd_server.host}:{etcd_server.port}"
    mm = closing(EtcdMatchMaker(conf, parse(conf, url)))
    mm.register(KEY, "a:1", 60)
    assert mm.lookup(KEY) == ["a:1"]


def test_an_outage_is_unavailable_and_leases_survive_a_restart(new_mm, etcd_server):
    mm = new_mm(zmq_matchmaker_timeout=1.0)
    mm.register(KEY, "a:1", 30)
    etcd_server.stop()
    with pytest.raises(BackendUnavailable, match="unreachable"):
        mm.lookup(KEY)
    etcd_server.start()  # same data: the lease and its record are still there
    assert mm.lookup(KEY) == ["a:1"]
    before = mm.generation("g")
    mm.register(KEY, "a:1", 30)
    assert mm.generation("g") == before


def has_read_the_generation(registrar: Registrar) -> bool:
    """The registrar knows the generation: a later change of it is noticed."""
    return registrar._generation is not None


def test_the_registrar_registers_again_when_etcd_comes_back_empty(new_mm, etcd_server):
    mm, reader = new_mm(zmq_matchmaker_timeout=1.0), new_mm()
    # Refreshes are far apart: only the lease check brings the record back quickly.
    registrar = Registrar(mm, expire=30, update=600, generation_key="zmqdriver/generation")
    try:
        registrar.add([KEY], "a:1")
        assert reader.lookup(KEY) == ["a:1"]
        wait_until(lambda: has_read_the_generation(registrar), timeout=15, what="a first read")
        [lease] = set(leases_of(etcd_server, KEY).values())
        etcd_server.stop()
        etcd_server.wipe()
        etcd_server.start()
        # Not "gone, then back": the registrar may be back before a lookup could see
        # the gap (its lease check notices at once). The record is on a new lease.
        assert eventually(lambda: reader.lookup(KEY) == ["a:1"], 15), "not registered again"
        assert lease not in set(leases_of(etcd_server, KEY).values()), "not registered again"
    finally:
        registrar.stop()


def test_a_registration_during_an_outage_is_retried_in_the_background(new_mm, etcd_server):
    mm, reader = new_mm(zmq_matchmaker_timeout=0.5), new_mm()
    registrar = Registrar(mm, expire=30, update=600)
    try:
        etcd_server.stop()
        registrar.add([KEY], "a:1")  # does not raise: an outage is retried
        etcd_server.start()
        assert eventually(lambda: reader.lookup(KEY) == ["a:1"], 15), "not registered"
    finally:
        registrar.stop()


def test_notifications_stay_on_the_host_by_design(etcd_url, tmp_path, caplog, closing):
    conf = make_conf(zmq_matchmaker_path=str(tmp_path / "mm" / "matchmaker.sqlite"))
    mm = closing(EtcdMatchMaker(conf, parse(conf, etcd_url)))
    with caplog.at_level(logging.INFO, logger="zmqdriver.notify"):
        store = notification_store_for(mm, conf)
    try:
        assert isinstance(store, SQLiteNotificationStore)
        assert [r.levelno for r in caplog.records] == [logging.INFO]
        assert "embedded store of this host" in caplog.records[0].getMessage()
    finally:
        store.close()


# --- credentials -----------------------------------------------------------------------


@pytest.fixture
def auth_etcd(extra_etcd) -> EtcdServer:
    """A member with authentication on: user root, password 'secret'."""
    server = extra_etcd()
    client = server.client()
    for path, body in [
        ("/auth/role/add", {"name": "root"}),
        ("/auth/user/add", {"name": "root", "password": "secret"}),
        ("/auth/user/grant", {"user": "root", "role": "root"}),
        ("/auth/enable", {}),
    ]:
        client.post(client.get_url(path), json=body)
    return server


def test_credentials_from_the_url(auth_etcd, closing):
    url = f"zmq+etcd://root:secret@{auth_etcd.host}:{auth_etcd.port}"
    mm = closing(EtcdMatchMaker(make_conf(), parse(make_conf(), url)))
    mm.register(KEY, "a:1", 60)
    assert mm.lookup(KEY) == ["a:1"]
    # An expired token is renewed.
    mm.backend.hosts[0].client.session.headers["Authorization"] = "stale.token"
    assert mm.lookup(KEY) == ["a:1"]


def test_missing_or_wrong_credentials_are_configuration_errors(auth_etcd, closing):
    address = f"{auth_etcd.host}:{auth_etcd.port}"
    anonymous = closing(EtcdMatchMaker(make_conf(), parse(make_conf(), f"zmq+etcd://{address}")))
    with pytest.raises(BackendError, match="requires authentication") as caught:
        anonymous.lookup(KEY)
    assert not isinstance(caught.value, BackendUnavailable)
    url = f"zmq+etcd://root:wrong@{address}"
    wrong = closing(EtcdMatchMaker(make_conf(), parse(make_conf(), url)))
    with pytest.raises(BackendError, match="refused user 'root'") as caught:
        wrong.lookup(KEY)
    assert "wrong" not in str(caught.value)  # never the password


# --- push: the watch behind the Directory -----------------------------------------------


def endpoint_record(port: int) -> str:
    return addressing.encode_record(addressing.Endpoint("10.0.0.1", port))


@pytest.fixture
def watched_directory(new_mm) -> Iterator[tuple[Directory, EtcdMatchMaker]]:
    """A client's Directory on etcd with push (a ttl of an hour: only pushes refresh it),
    and a matchmaker playing the servers."""
    directory = Directory(new_mm(zmq_matchmaker_timeout=1.0), ttl=3600, watch_prefix="zmqdriver/")
    yield directory, new_mm()
    directory.close()


def test_a_new_or_removed_server_is_seen_at_once(watched_directory):
    directory, servers = watched_directory
    assert directory.endpoints(KEY) == []
    wait_until(lambda: directory._pushing(), timeout=10, what="the watch to be up")
    servers.register(KEY, endpoint_record(5000), 60)
    wait_until(lambda: directory.endpoints(KEY), timeout=2, what="the new server")
    servers.unregister(KEY, endpoint_record(5000))
    wait_until(lambda: directory.endpoints(KEY) == [], timeout=2, what="the server gone")
    servers.register(KEY, endpoint_record(5001), 1)  # then its lease runs out
    wait_until(lambda: directory.endpoints(KEY), timeout=2, what="the next server")
    wait_until(lambda: directory.endpoints(KEY) == [], timeout=10, what="its lease to run out")


def test_with_the_watch_down_clients_poll_then_push_resumes(watched_directory, etcd_server):
    directory, servers = watched_directory
    directory._ttl = 0.2  # the polling fallback, short for the test
    directory.endpoints(KEY)
    wait_until(lambda: directory._pushing(), timeout=10, what="the watch to be up")
    etcd_server.stop()
    wait_until(lambda: not directory._pushing(), timeout=10, what="the watch to be down")
    etcd_server.start()
    # A change while the watch is still reconnecting is found by polling or by the resync.
    servers.register(KEY, endpoint_record(5000), 60)
    wait_until(lambda: directory.endpoints(KEY), timeout=15, what="the server, polled")
    wait_until(lambda: directory._pushing(), timeout=15, what="the watch to be back")
    directory._ttl = 3600
    servers.register(KEY, endpoint_record(5001), 60)
    wait_until(lambda: len(directory.endpoints(KEY)) == 2, timeout=2, what="a pushed change")


# --- TLS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory, tls_files) -> Iterator[EtcdServer]:
    """A member serving HTTPS only, requiring client certificates (tests/tls_fixture.py)."""
    server = EtcdServer(tmp_path_factory.mktemp("etcd-tls"), tls=tls_files)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def tls_options(tls_files, **overrides) -> dict[str, object]:
    return {
        "zmq_etcd_tls_enabled": True,
        "zmq_etcd_tls_ca_file": str(tls_files.ca),
        "zmq_etcd_tls_cert_file": str(tls_files.client_cert),
        "zmq_etcd_tls_key_file": str(tls_files.client_key),
        **overrides,
    }


def test_tls_with_a_client_certificate(tls_etcd, tls_files, closing):
    conf = make_conf(**tls_options(tls_files))
    mm = closing(EtcdMatchMaker(conf, parse(conf, tls_etcd.url)))
    mm.register(KEY, "a:1", 60)
    assert mm.lookup(KEY) == ["a:1"]


def test_an_untrusted_member_certificate_is_a_configuration_error(tls_etcd, tls_files, closing):
    conf = make_conf(**tls_options(tls_files, zmq_etcd_tls_ca_file=None))  # system CAs
    mm = closing(EtcdMatchMaker(conf, parse(conf, tls_etcd.url)))
    with pytest.raises(BackendError, match="TLS certificate was refused") as caught:
        mm.lookup(KEY)
    assert not isinstance(caught.value, BackendUnavailable)


def test_plain_http_to_a_tls_member_says_to_turn_tls_on(tls_etcd, closing):
    conf = make_conf()
    mm = closing(EtcdMatchMaker(conf, parse(conf, tls_etcd.url)))
    # A member that requires client certificates drops the connection: an outage with a hint.
    with pytest.raises(BackendUnavailable, match="if it serves TLS only, set zmq_etcd_tls_enabled"):
        mm.lookup(KEY)


# --- a three-member cluster -------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path / "cluster", size=3)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_losing_the_leader_keeps_records_and_service(cluster, closing):
    conf = make_conf(zmq_matchmaker_timeout=1.0)
    # The leader first in the URL: the member this client talks to is the one that dies.
    leader = cluster.leader()
    others = [member for member in cluster.members if member is not leader]
    url = "zmq+etcd://" + ",".join(f"{m.host}:{m.port}" for m in [leader, *others])
    mm = closing(EtcdMatchMaker(conf, parse(conf, url)))
    registrar = Registrar(mm, expire=10, update=1, generation_key="zmqdriver/generation")
    try:
        registrar.add([KEY], "a:1")
        leader.stop()  # SIGKILL: a member lost, and an election among the two left
        # Lookups fail over (an outage at worst while the election runs), the record stays.
        wait_until(lambda: _lookup_or_none(mm) == ["a:1"], timeout=15, what="a lookup")
        new_leader = cluster.leader()
        assert new_leader is not leader
        # The lease is kept alive through the others: still there after its TTL.
        time.sleep(11)
        assert mm.lookup(KEY) == ["a:1"]
        mm.register(KEY, "b:2", 10)
        assert mm.lookup(KEY) == ["a:1", "b:2"]
    finally:
        registrar.stop()


def _lookup_or_none(mm: EtcdMatchMaker) -> list[str] | None:
    try:
        return mm.lookup(KEY)
    except BackendUnavailable:
        return None


def test_a_lease_revoked_by_hand_comes_back_on_a_new_one(new_mm, etcd_server):
    mm, reader = new_mm(), new_mm()
    registrar = Registrar(mm, expire=30, update=600, generation_key="zmqdriver/generation")
    try:
        registrar.add([KEY, KEY + "/host1"], "a:1")
        wait_until(lambda: has_read_the_generation(registrar), timeout=15, what="a first read")
        [lease] = set(leases_of(etcd_server, "zmqdriver/").values())
        client = etcd_server.client()
        client.post(client.get_url("/kv/lease/revoke"), json={"ID": lease})
        # Not "gone, then back" (the registrar may be back before a lookup sees the
        # gap): back, on another lease.
        wait_until(
            lambda: reader.lookup(KEY) == ["a:1"] == reader.lookup(KEY + "/host1"),
            timeout=10,
            what="both records back",
        )
        assert set(leases_of(etcd_server, "zmqdriver/").values()) != {lease}
    finally:
        registrar.stop()
