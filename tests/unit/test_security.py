"""CURVE: record keys, key files, settings, handshake messages, and the ZAP handler
driven by a real I/O loop with real CURVE sockets."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.auth
from oslo_config import cfg
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from harness.wait import eventually
from tests.support import make_conf
from zmqdriver import addressing, options, security
from zmqdriver.addressing import Endpoint, decode_record, encode_record, is_z85_key
from zmqdriver.discovery import Directory
from zmqdriver.eventloop import IoLoop
from zmqdriver.eventloop.native import NativeRuntime
from zmqdriver.matchmaker.local import LocalMatchMaker
from zmqdriver.rpc.outbox import handshake_failure
from zmqdriver.security import CurveConfigError, KeyPair, ZapHandler

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # generous: conditions are normally met in milliseconds
KEY = zmq.curve_keypair()[0].decode()


# -- the key in matchmaker records -----------------------------------------------------


def test_record_with_key_round_trips():
    endpoint = Endpoint("10.1.2.3", 4000, KEY)
    record = encode_record(endpoint)
    assert json.loads(record) == {"v": 1, "host": "10.1.2.3", "port": 4000, "key": KEY}
    assert decode_record(record) == endpoint


def test_record_without_key_is_unchanged_and_still_valid():
    # What a server without CURVE (or an older release) publishes, byte for byte.
    record = '{"host":"10.1.2.3","port":4000,"v":1}'
    assert encode_record(Endpoint("10.1.2.3", 4000)) == record
    assert decode_record(record) == Endpoint("10.1.2.3", 4000, "")


def test_an_older_reader_sees_a_keyed_record_as_its_endpoint():
    # Older releases read v, host and port and ignore other fields.
    data = json.loads(encode_record(Endpoint("h", 1, KEY)))
    assert (data["v"], data["host"], data["port"]) == (1, "h", 1)


@pytest.mark.parametrize(
    "key",
    [
        "",
        None,
        42,
        ["x"],
        KEY[:-1],
        KEY + "a",
        KEY[:-1] + " ",
        KEY[:-1] + '"',
        KEY[:-1] + "\\",
        KEY[:-1] + ",",
        KEY[:-1] + "é",
        "#" * 40,  # every character is Z85, but the groups overflow 32 bits
    ],
)
def test_decode_record_rejects_invalid_keys(key):
    record = json.dumps({"v": 1, "host": "h", "port": 1, "key": key})
    with pytest.raises(ValueError, match="invalid CURVE key"):
        decode_record(record)


def test_z85_check_agrees_with_the_decoder():
    rng = random.Random(7)
    for _ in range(2000):
        text = "".join(rng.choice(addressing.Z85_ALPHABET) for _ in range(40))
        try:
            z85.decode(text)
            decodes = True
        except Exception:
            decodes = False
        assert is_z85_key(text) == decodes, text
    for _ in range(50):
        public, secret = zmq.curve_keypair()
        assert is_z85_key(public.decode()) and is_z85_key(secret.decode())


def test_the_key_is_part_of_an_endpoints_identity():
    # A server back on the same port with a new key needs a new connection.
    other = zmq.curve_keypair()[0].decode()
    assert Endpoint("h", 1, KEY) != Endpoint("h", 1, other)
    assert Endpoint("h", 1, KEY) != Endpoint("h", 1)
    mixed = [Endpoint("h", 1, KEY), Endpoint("h", 1), Endpoint("a", 9, other)]
    assert sorted(mixed)[0] == Endpoint("a", 9, other)  # keyed and keyless compare


# -- key files and settings -----------------------------------------------------------


def _pair(tmp_path: Path, name: str) -> tuple[str, str]:
    public_file, secret_file = zmq.auth.create_certificates(str(tmp_path), name)
    os.chmod(secret_file, 0o600)
    return public_file, secret_file


def test_load_key_pair_reads_both_keys(tmp_path):
    public_file, secret_file = _pair(tmp_path, "me")
    pair = security.load_key_pair(secret_file)
    assert pair.public.encode() == zmq.auth.load_certificate(public_file)[0]
    assert zmq.curve_public(pair.secret.encode()) == pair.public.encode()
    assert pair.secret not in repr(pair)


def _broken(tmp_path: Path, text: str) -> str:
    path = tmp_path / "broken.key_secret"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda tmp: str(tmp / "missing.key_secret"), "does not exist"),
        (lambda tmp: str(tmp), "not a regular file"),
        (lambda tmp: _pair(tmp, "pub")[0], "public key only"),
        (lambda tmp: _broken(tmp, "nothing here\n"), "No public key"),
        (
            lambda tmp: _broken(tmp, 'public-key = "short"\nsecret-key = "short"\n'),
            "not 40-character Z85",
        ),
    ],
)
def test_load_key_pair_errors_name_option_and_path(tmp_path, make, problem):
    path = make(tmp_path)
    with pytest.raises(CurveConfigError) as info:
        security.load_key_pair(path)
    message = str(info.value)
    assert "zmq_curve_secret_key_file" in message and path in message
    assert problem in message


def test_load_key_pair_rejects_keys_that_do_not_belong_together(tmp_path):
    mine, other = zmq.curve_keypair(), zmq.curve_keypair()
    path = _broken(
        tmp_path, f'public-key = "{other[0].decode()}"\nsecret-key = "{mine[1].decode()}"\n'
    )
    with pytest.raises(CurveConfigError, match="does not belong to the secret key"):
        security.load_key_pair(path)


def test_a_key_file_readable_by_others_is_loaded_with_a_warning(tmp_path, caplog):
    _, secret_file = _pair(tmp_path, "open")
    os.chmod(secret_file, 0o644)
    with caplog.at_level(logging.WARNING, logger=security.LOG.name):
        security.load_key_pair(secret_file)
    assert any("chmod 600" in r.getMessage() for r in caplog.records)
    caplog.clear()
    os.chmod(secret_file, 0o600)
    with caplog.at_level(logging.WARNING, logger=security.LOG.name):
        security.load_key_pair(secret_file)
    assert not caplog.records


def test_check_allowed_keys_dir(tmp_path, caplog):
    allowed = tmp_path / "allowed"
    with pytest.raises(CurveConfigError, match="does not exist") as info:
        security.check_allowed_keys_dir(str(allowed))
    assert "zmq_curve_allowed_keys_dir" in str(info.value) and str(allowed) in str(info.value)
    allowed.write_text("")
    with pytest.raises(CurveConfigError, match="not a directory"):
        security.check_allowed_keys_dir(str(allowed))
    allowed.unlink()
    allowed.mkdir()
    with caplog.at_level(logging.WARNING, logger=security.LOG.name):
        assert security.check_allowed_keys_dir(str(allowed)) == 0
    assert any("every client is refused" in r.getMessage() for r in caplog.records)
    _pair(allowed, "a")
    _pair(allowed, "b")
    assert security.check_allowed_keys_dir(str(allowed)) == 2
    (allowed / "junk.key").write_text("not a key\n")
    with pytest.raises(CurveConfigError, match="junk.key"):
        security.check_allowed_keys_dir(str(allowed))


def test_settings_are_none_without_curve_and_warn_about_unused_keys(tmp_path, caplog):
    assert security.load_settings(make_conf()) is None
    _, secret_file = _pair(tmp_path, "me")
    conf = make_conf(zmq_curve_secret_key_file=secret_file)
    with caplog.at_level(logging.WARNING, logger=security.LOG.name):
        assert security.load_settings(conf) is None
    assert any("neither encrypted nor authenticated" in r.getMessage() for r in caplog.records)


def test_curve_without_a_key_file_is_rejected_by_validation():
    with pytest.raises(cfg.Error, match="zmq_curve_secret_key_file is not set"):
        options.validate(make_conf(zmq_curve_enabled=True))


def test_settings_with_curve(tmp_path, monkeypatch):
    _, secret_file = _pair(tmp_path, "me")
    (tmp_path / "allowed").mkdir()
    monkeypatch.chdir(tmp_path)
    conf = make_conf(
        zmq_curve_enabled=True,
        zmq_curve_secret_key_file=secret_file,
        zmq_curve_allowed_keys_dir="allowed",
    )
    settings = security.load_settings(conf)
    assert settings.keys == security.load_key_pair(secret_file)
    assert settings.allowed_keys_dir == str(tmp_path / "allowed")  # absolute
    assert security.require_allowed_keys_dir(settings) == str(tmp_path / "allowed")


def test_a_server_needs_the_allowed_keys_dir(tmp_path):
    _, secret_file = _pair(tmp_path, "me")
    conf = make_conf(zmq_curve_enabled=True, zmq_curve_secret_key_file=secret_file)
    settings = security.load_settings(conf)
    assert settings.allowed_keys_dir is None  # fine for a process that only sends
    with pytest.raises(CurveConfigError, match="zmq_curve_allowed_keys_dir is not set"):
        security.require_allowed_keys_dir(settings)


# -- what clients say about failed handshakes --------------------------------------------


def test_handshake_failure_messages():
    refused = handshake_failure(zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400, True)
    assert "refused this client's CURVE key" in refused and "allowed_keys_dir" in refused
    mismatch = zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
    off = handshake_failure(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, mismatch, False)
    assert "requires CURVE" in off and "zmq_curve_enabled off" in off
    on = handshake_failure(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, mismatch, True)
    assert "this client uses CURVE, the server does not" in on
    wrong_key = handshake_failure(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 32, True)
    assert "does not match its matchmaker record" in wrong_key


# -- the Directory skips servers without a key when CURVE is on ---------------------------


@pytest.fixture
def local_mm(tmp_path) -> Iterator[LocalMatchMaker]:
    conf = make_conf(zmq_matchmaker_path=str(tmp_path / "mm.sqlite"))
    matchmaker = LocalMatchMaker(conf, None)
    yield matchmaker
    matchmaker.close()


def test_directory_with_curve_skips_servers_without_a_key(local_mm, caplog):
    keyed, keyless = Endpoint("10.0.0.1", 5001, KEY), Endpoint("10.0.0.2", 5002)
    for endpoint in (keyed, keyless):
        local_mm.register("k", encode_record(endpoint), 60.0)
    assert Directory(local_mm, ttl=0.0).endpoints("k") == [keyed, keyless]
    directory = Directory(local_mm, ttl=0.0, require_key=True)
    with caplog.at_level(logging.WARNING, logger="zmqdriver.discovery"):
        assert directory.endpoints("k") == [keyed]
        assert directory.endpoints("k") == [keyed]
    skipped = [r for r in caplog.records if "has no CURVE key" in r.getMessage()]
    assert len(skipped) == 1 and "10.0.0.2" in skipped[0].getMessage()  # once per server


# -- the ZAP handler in a real I/O loop ----------------------------------------------------


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def loop(ctx) -> Iterator[IoLoop]:
    # Depends on ctx so that it stops (closing its sockets) before ctx is destroyed.
    io_loop = IoLoop(NativeRuntime(), name="test-zap")
    yield io_loop
    io_loop.stop()


class CurveServer:
    """A CURVE ROUTER and the ZAP handler, both in the loop, as the driver sets them up."""

    def __init__(self, loop: IoLoop, ctx: zmq.Context, allowed_dir: str) -> None:
        self.keys = _keys(zmq.curve_keypair())
        self.received: list[bytes] = []
        self.zap = loop.call(ZapHandler, loop, ctx, allowed_dir)
        self.port = loop.call(self._bind, loop, ctx)

    def _bind(self, loop: IoLoop, ctx: zmq.Context) -> int:
        router = ctx.socket(zmq.ROUTER)
        router.curve_server = True
        router.curve_secretkey = self.keys.secret.encode()
        port = router.bind_to_random_port("tcp://127.0.0.1")
        loop.add_reader(router, lambda frames: self.received.append(frames[-1]))
        return port


def _keys(pair: tuple[bytes, bytes]) -> KeyPair:
    return KeyPair(pair[0].decode(), pair[1].decode())


def _allow(allowed_dir: Path, name: str, keys: KeyPair) -> None:
    (allowed_dir / f"{name}.key").write_text(f'curve\n    public-key = "{keys.public}"\n')


def attempt(server: CurveServer, client: KeyPair, payload: bytes) -> bool:
    """Connect with ``client``'s keys and send; True once it arrived, False if refused."""
    context = zmq.Context()
    try:
        dealer = context.socket(zmq.DEALER)
        dealer.curve_serverkey = server.keys.public.encode()
        dealer.curve_publickey = client.public.encode()
        dealer.curve_secretkey = client.secret.encode()
        monitor = dealer.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
        )
        dealer.connect(f"tcp://127.0.0.1:{server.port}")
        dealer.send(payload)
        assert monitor.poll(WAIT * 1000), "no handshake outcome"
        if recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return False
        return eventually(lambda: payload in server.received, WAIT)
    finally:
        context.destroy(linger=0)


def test_zap_lets_allowed_keys_in_and_refuses_others(loop, ctx, tmp_path, caplog):
    allowed_dir = tmp_path / "allowed"
    allowed_dir.mkdir()
    friend, stranger = _keys(zmq.curve_keypair()), _keys(zmq.curve_keypair())
    _allow(allowed_dir, "friend", friend)
    server = CurveServer(loop, ctx, str(allowed_dir))
    assert server.zap.allowed_keys == 1
    with caplog.at_level(logging.WARNING):
        assert attempt(server, friend, b"from-friend")
        for i in range(3):
            assert not attempt(server, stranger, f"from-stranger-{i}".encode())
        assert eventually(lambda: _refusal_lines(caplog), WAIT)
    # Nothing of the stranger ever reached the server socket.
    assert server.received == [b"from-friend"]
    # Rate-limited: three refusals in a row make one line, naming the key.
    (line,) = _refusal_lines(caplog)
    assert stranger.public in line and "refused 1 client connection" in line
    assert str(allowed_dir) in line


def _refusal_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]


def test_zap_reloads_the_directory_without_restart(loop, ctx, tmp_path):
    allowed_dir = tmp_path / "allowed"
    allowed_dir.mkdir()
    newcomer = _keys(zmq.curve_keypair())
    server = CurveServer(loop, ctx, str(allowed_dir))
    assert not attempt(server, newcomer, b"early")
    _allow(allowed_dir, "newcomer", newcomer)
    # A refused client retries; within RELOAD_EVERY the handler reads the key.
    assert eventually(lambda: attempt(server, newcomer, b"later"), WAIT)
    assert b"early" not in server.received
    (allowed_dir / "newcomer.key").unlink()
    assert eventually(lambda: not attempt(server, newcomer, b"removed"), WAIT)


def test_zap_keeps_the_last_keys_when_the_directory_breaks(loop, ctx, tmp_path, caplog):
    allowed_dir = tmp_path / "allowed"
    allowed_dir.mkdir()
    friend = _keys(zmq.curve_keypair())
    _allow(allowed_dir, "friend", friend)
    server = CurveServer(loop, ctx, str(allowed_dir))
    (allowed_dir / "junk.key").write_text("no key in here\n")
    with caplog.at_level(logging.ERROR):
        # Handshakes trigger the reload, which fails; the friend still gets in.
        assert eventually(lambda: attempt(server, friend, b"x") and _failed_loads(caplog), WAIT)
        assert "junk.key" in _failed_loads(caplog)[0]
        shutil.rmtree(allowed_dir)
        # A directory that disappeared keeps the keys too (e.g. replaced by a rename).
        assert eventually(
            lambda: attempt(server, friend, b"y") and len(_failed_loads(caplog)) >= 2, WAIT
        )


def _failed_loads(caplog) -> list[str]:
    lines = [r.getMessage() for r in caplog.records]
    return [line for line in lines if "Failed to load CURVE certs" in line]


def test_zap_socket_closes_with_the_loop(tmp_path):
    context = zmq.Context()
    io_loop = IoLoop(NativeRuntime(), name="test-zap-close")
    io_loop.call(ZapHandler, io_loop, context, str(tmp_path))
    io_loop.stop()
    # term() returns only when every socket of the context is closed.
    context.term()
