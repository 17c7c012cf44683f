"""TLS to Redis and Sentinel, and ACL users, against real servers.

The servers listen on TLS only and require a client certificate
(tests/tls_fixture.py makes the CA and the certificates, and starts them);
the Redis one also has ACL user ``alice`` and its ``default`` user switched off.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator

import pytest

from harness.redis_server import RedisServer
from tests.support import make_conf, parse
from tests.tls_fixture import ACL_PASSWORD, ACL_USER, SENTINEL_MASTER_PASSWORD
from zmqdriver import keyfiles
from zmqdriver.matchmaker import MatchMakerError, MatchMakerUnavailable
from zmqdriver.matchmaker.redis import RedisMatchMaker
from zmqdriver.matchmaker.sentinel import SentinelMatchMaker
from zmqdriver.notify import notification_store_for

pytestmark = pytest.mark.timeout(120)

KEY = "zmqdriver/exchange/topic"
CREDENTIALS = f"{ACL_USER}:{ACL_PASSWORD}@"


@pytest.fixture
def new_mm(tls_redis: RedisServer) -> Iterator[Callable[..., RedisMatchMaker]]:
    """Matchmakers on the TLS server: ``new_mm(url_suffix, credentials, **options)``."""
    made: list[RedisMatchMaker] = []

    def make(suffix: str = "", credentials: str = CREDENTIALS, **options) -> RedisMatchMaker:
        conf = make_conf(**options)
        url = f"zmq+redis://{credentials}127.0.0.1:{tls_redis.port}{suffix}"
        made.append(RedisMatchMaker(conf, parse(conf, url)))
        return made[-1]

    yield make
    for mm in made:
        mm.close()


def test_tls_from_options(new_mm, tls_files, tls_redis):
    mm = new_mm(**tls_files.driver_options())
    mm.register(KEY, "a:1", 60)
    assert mm.lookup(KEY) == ["a:1"]
    with tls_redis.client(username="alice", password="secret") as client:
        assert client.exists(KEY) == 1


def test_tls_from_url(new_mm, tls_files):
    options = tls_files.driver_options()
    del options["zmq_redis_tls_enabled"]
    mm = new_mm("/0?tls=true", **options)
    mm.register(KEY, "b:2", 60)
    assert "b:2" in mm.lookup(KEY)


def test_notification_store_uses_tls(new_mm, tls_files):
    options = tls_files.driver_options()
    store = notification_store_for(new_mm(**options), make_conf(**options))
    store.subscribe(["tls-stream"], "pool", "me")
    store.append("tls-stream", '{"n": 1}')
    [message] = store.read(["tls-stream"], "pool", "me", 1, 5.0)
    assert message.payload == '{"n": 1}'


def test_wrong_password_names_the_user(new_mm, tls_files):
    mm = new_mm(credentials="alice:nope@", **tls_files.driver_options())
    with pytest.raises(MatchMakerError, match="rejected the credentials of user 'alice'") as info:
        mm.lookup(KEY)
    assert not isinstance(info.value, MatchMakerUnavailable)
    assert "nope" not in str(info.value)


def test_default_user_is_off(new_mm, tls_files):
    mm = new_mm(credentials="", **tls_files.driver_options())
    with pytest.raises(MatchMakerError, match="requires authentication|'default'"):
        mm.lookup(KEY)


def test_without_the_ca_the_server_certificate_is_refused(new_mm, tls_files):
    options = tls_files.driver_options()
    del options["zmq_redis_tls_ca_file"]  # the system CAs did not sign the test server
    with pytest.raises(MatchMakerError, match="certificate") as info:
        new_mm(**options).lookup(KEY)
    assert not isinstance(info.value, MatchMakerUnavailable)
    assert "zmq_redis_tls_ca_file" in str(info.value)


def test_plain_client_is_told_about_tls(new_mm, tls_redis):
    with pytest.raises(MatchMakerUnavailable, match="zmq_redis_tls_enabled") as info:
        new_mm().lookup(KEY)
    assert f"127.0.0.1:{tls_redis.port}" in str(info.value)


@pytest.mark.parametrize("certificate", ["none", "stranger"])
def test_client_certificate_required(new_mm, tls_files, certificate):
    options = tls_files.driver_options()
    if certificate == "none":
        del options["zmq_redis_tls_cert_file"], options["zmq_redis_tls_key_file"]
    else:
        options["zmq_redis_tls_cert_file"] = str(tls_files.stranger_cert)
        options["zmq_redis_tls_key_file"] = str(tls_files.stranger_key)
    with pytest.raises(MatchMakerUnavailable, match="client certificate"):
        new_mm(**options).lookup(KEY)


def test_url_can_turn_tls_off(new_mm, tls_files):
    mm = new_mm("?tls=false", **tls_files.driver_options())
    with pytest.raises(MatchMakerUnavailable, match="accepts TLS only"):
        mm.lookup(KEY)


@pytest.mark.parametrize(
    ("suffix", "options", "message"),
    [
        ("?tls=maybe", {}, r"\?tls=maybe"),
        ("?ssl=true", {}, "Unknown option.*ssl.*accepted: tls"),
        ("", {"zmq_redis_tls_ca_file": "/etc/hostname"}, "TLS to Redis is off"),
        ("?tls=true", {"zmq_redis_tls_ca_file": "/nonexistent.pem"}, "nonexistent.pem: no such"),
        ("?tls=true", {"zmq_redis_tls_ca_file": "/etc/hostname"}, "not usable for TLS"),
        ("?tls=true", {"zmq_redis_tls_cert_file": "/etc/hostname"}, "go together"),
    ],
)
def test_configuration_errors_at_startup(new_mm, suffix, options, message):
    with pytest.raises(MatchMakerError, match=message):
        new_mm(suffix, **options)


def test_mismatched_key_is_refused_at_startup(new_mm, tls_files):
    options = tls_files.driver_options()
    options["zmq_redis_tls_key_file"] = str(tls_files.stranger_key)
    with pytest.raises(MatchMakerError, match="zmq_redis_tls_key_file = .*not usable for TLS"):
        new_mm(**options)


def _sentinel_mm(cluster, **options) -> SentinelMatchMaker:
    conf = make_conf(**options)
    return SentinelMatchMaker(conf, parse(conf, cluster.url))


def test_sentinel_over_tls(tls_sentinels, tls_files):
    mm = _sentinel_mm(tls_sentinels, **tls_files.driver_options())
    try:
        mm.register(KEY, "s:1", 60)
        assert mm.lookup(KEY) == ["s:1"]
        master = tls_sentinels.current_master()
        with master.client(password=SENTINEL_MASTER_PASSWORD) as client:
            assert client.exists(KEY) == 1
    finally:
        mm.close()


def test_sentinel_certificate_refused(tls_sentinels, tls_files):
    options = tls_files.driver_options()
    del options["zmq_redis_tls_ca_file"]
    mm = _sentinel_mm(tls_sentinels, **options)
    try:
        with pytest.raises(MatchMakerError, match="sentinels' TLS certificates") as info:
            mm.lookup(KEY)
        assert not isinstance(info.value, MatchMakerUnavailable)
        assert "zmq_redis_tls_ca_file" in str(info.value)
    finally:
        mm.close()


def test_sentinel_plain_client_is_told_about_tls(tls_sentinels):
    mm = _sentinel_mm(tls_sentinels)
    try:
        with pytest.raises(MatchMakerUnavailable, match="accepts TLS only"):
            mm.lookup(KEY)
    finally:
        mm.close()


def test_a_client_key_readable_by_others_is_used_with_a_warning(new_mm, tls_files, caplog):
    os.chmod(tls_files.client_key, 0o644)
    try:
        with caplog.at_level(logging.WARNING, logger=keyfiles.LOG.name):
            new_mm(**tls_files.driver_options()).register(KEY, "a:1", 60)
        assert any(
            "zmq_redis_tls_key_file" in r.getMessage() and "chmod 600" in r.getMessage()
            for r in caplog.records
        )
    finally:
        os.chmod(tls_files.client_key, 0o600)
