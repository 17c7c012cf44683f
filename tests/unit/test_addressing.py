"""Matchmaker keys for targets, and the endpoint records servers publish."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from zmqdriver import addressing
from zmqdriver.addressing import (
    Endpoint,
    Record,
    ServerInfo,
    decode_record,
    encode_record,
    key_fingerprint,
    read_record,
    rpc_key,
)

# -- rpc_key -----------------------------------------------------------------------


def test_rpc_key_layout_without_server():
    assert rpc_key("zmqdriver", "openstack", "compute") == "zmqdriver/rpc/openstack/compute"


def test_rpc_key_layout_with_server():
    assert (
        rpc_key("zmqdriver", "openstack", "compute", "host-1")
        == "zmqdriver/rpc/openstack/compute/host-1"
    )


def test_rpc_key_server_none_and_empty_mean_the_topic_key():
    topic_key = rpc_key("p", "ex", "topic")
    assert rpc_key("p", "ex", "topic", None) == topic_key
    assert rpc_key("p", "ex", "topic", "") == topic_key
    assert rpc_key("p", "ex", "topic", "srv") != topic_key


def test_rpc_key_quotes_separators_in_every_component():
    key = rpc_key("p", "ex/a:b", "to/pic:1", "host/1:2")
    assert key == "p/rpc/ex%2Fa%3Ab/to%2Fpic%3A1/host%2F1%3A2"
    # Exactly the four fixed separators plus the server one: nothing leaks through.
    assert key.count("/") == 4


@pytest.mark.parametrize(
    ("one", "other"),
    [
        # A '/' in the topic must not look like topic + server.
        (("ex", "a/b", None), ("ex", "a", "b")),
        # A '/' in the exchange must not look like another exchange + topic.
        (("a/b", "c", None), ("a", "b/c", None)),
        (("a/b", "c", None), ("a", "b", "c")),
        # ':' is quoted too, so it cannot be mistaken for a port or a scheme.
        (("ex", "a:b", None), ("ex", "a", "b")),
        (("ex", "t", "h:1"), ("ex", "t:h", "1")),
        # A literal '%2F' is itself quoted, so it differs from a quoted '/'.
        (("ex", "a%2Fb", None), ("ex", "a/b", None)),
    ],
)
def test_rpc_key_distinct_targets_never_collide(one, other):
    assert rpc_key("p", *one) != rpc_key("p", *other)


def test_rpc_key_unicode_topic_is_quoted_ascii():
    key = rpc_key("p", "ex", "tópico")
    assert key.isascii()
    assert key != rpc_key("p", "ex", "topico")


# -- target_exchange -------------------------------------------------------------


def _target(exchange):
    return SimpleNamespace(exchange=exchange, topic="t", server=None)


def test_target_exchange_prefers_the_targets_own():
    assert addressing.target_exchange(_target("nova"), "transport-default") == "nova"


def test_target_exchange_falls_back_to_the_transport_default():
    assert addressing.target_exchange(_target(None), "transport-default") == "transport-default"
    assert addressing.target_exchange(_target(""), "transport-default") == "transport-default"


def test_target_exchange_last_resort_is_openstack():
    assert addressing.target_exchange(_target(None), None) == "openstack"
    assert addressing.target_exchange(_target(None), "") == "openstack"
    assert addressing.DEFAULT_EXCHANGE == "openstack"


def test_target_exchange_with_a_real_oslo_target():
    import oslo_messaging

    assert addressing.target_exchange(oslo_messaging.Target(topic="t"), None) == "openstack"
    assert addressing.target_exchange(oslo_messaging.Target(topic="t", exchange="x"), "y") == "x"


# -- Endpoint --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "uri"),
    [
        ("127.0.0.1", 5555, "tcp://127.0.0.1:5555"),
        ("compute-1.example.org", 49153, "tcp://compute-1.example.org:49153"),
        ("::1", 6000, "tcp://[::1]:6000"),
        ("fe80::1:2", 65535, "tcp://[fe80::1:2]:65535"),
        ("2001:db8::ff00:42:8329", 1, "tcp://[2001:db8::ff00:42:8329]:1"),
    ],
)
def test_endpoint_uri(host, port, uri):
    endpoint = Endpoint(host, port)
    assert endpoint.uri == uri
    assert str(endpoint) == uri


def test_endpoints_are_hashable_and_ordered():
    a, b = Endpoint("10.0.0.1", 2000), Endpoint("10.0.0.1", 1000)
    assert sorted({a, b, Endpoint("10.0.0.1", 2000)}) == [b, a]


# -- records ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    [
        Endpoint("127.0.0.1", 49153),
        Endpoint("::1", 1),
        Endpoint("host.example.org", 65535),
        Endpoint("localhost", 8080),
        Endpoint("fqdn.example.org.", 22),
    ],
)
def test_record_round_trip(endpoint):
    record = encode_record(endpoint)
    assert isinstance(record, str)
    assert decode_record(record) == endpoint


def test_record_is_versioned_compact_json():
    record = encode_record(Endpoint("10.1.2.3", 4000))
    assert json.loads(record) == {"v": 1, "host": "10.1.2.3", "port": 4000}
    # Stable text: the same endpoint always gives the same record, so
    # re-registering it refreshes it instead of adding a duplicate.
    assert record == '{"host":"10.1.2.3","port":4000,"v":1}'


def _record(**fields) -> str:
    data = {"v": 1, "host": "10.0.0.1", "port": 5000}
    data.update(fields)
    return json.dumps({k: v for k, v in data.items() if v is not _MISSING})


_MISSING = object()


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ("not json", "not JSON"),
        ("", "not JSON"),
        ('{"v": 1, "host": ', "not JSON"),
        ("[1, 2]", "not an object"),
        ('"a string"', "not an object"),
        ("42", "not an object"),
        ("null", "not an object"),
        (_record(v=2), "unknown version 2"),
        (_record(v="1"), "unknown version '1'"),
        (_record(v=_MISSING), "unknown version None"),
        (_record(host=_MISSING), "invalid host None"),
        (_record(host=""), "invalid host ''"),
        (_record(host=42), "invalid host 42"),
        (_record(host="bad host"), "invalid host 'bad host'"),
        (_record(host="user@host"), "invalid host 'user@host'"),
        (_record(host="a..b"), "invalid host 'a..b'"),
        (_record(host="under_score"), "invalid host 'under_score'"),
        (_record(host="tcp://host"), "invalid host 'tcp://host'"),
        (_record(host="hóst"), "invalid host"),
        (_record(host="a" * 64), "invalid host"),
        (_record(host=".".join(["abcdefgh"] * 30)), "invalid host"),
        (_record(port=_MISSING), "invalid port None"),
        (_record(port=0), "invalid port 0"),
        (_record(port=-1), "invalid port -1"),
        (_record(port=65536), "invalid port 65536"),
        (_record(port="80"), "invalid port '80'"),
        (_record(port=80.0), "invalid port 80.0"),
        (_record(port=True), "invalid port True"),
    ],
)
def test_decode_record_rejects(record, problem):
    with pytest.raises(ValueError, match="matchmaker record") as info:
        decode_record(record)
    assert problem in str(info.value)


def test_decode_record_accepts_longest_valid_names():
    label = "a" * 63
    assert decode_record(_record(host=label)) == Endpoint(label, 5000)
    long_name = ".".join(["a" * 49] * 5)  # 249 characters
    assert len(long_name) <= 253
    assert decode_record(_record(host=long_name)).host == long_name


def test_decode_record_quotes_only_a_prefix_of_garbage():
    garbage = "x" * 10_000
    with pytest.raises(ValueError) as info:
        decode_record(garbage)
    assert len(str(info.value)) < 200


# -- the loopback trap ------------------------------------------------------------------


@pytest.mark.parametrize("bind", ["*", "0.0.0.0", "::"])
def test_a_name_resolving_to_loopback_while_binding_everywhere_is_a_trap(bind):
    why = addressing.loopback_trap(bind, "node1", ["127.0.1.1"])
    assert why is not None
    assert "'node1'" in why and "127.0.1.1" in why and f"rpc_zmq_bind_address={bind!r}" in why
    assert "Set rpc_zmq_host" in why
    assert addressing.loopback_trap(bind, "localhost", ["127.0.0.1", "::1"]) is not None


@pytest.mark.parametrize(
    ("bind", "host", "resolved"),
    [
        ("*", "node1", ["10.0.0.5"]),  # a real address
        ("*", "node1", ["127.0.1.1", "10.0.0.5"]),  # one real address is enough
        ("*", "10.0.0.5", ["10.0.0.5"]),
        ("127.0.0.1", "127.0.0.1", ["127.0.0.1"]),  # loopback on purpose (zmq://)
        ("10.0.0.5", "node1", ["127.0.1.1"]),  # one interface: the operator chose it
        ("eth0", "node1", ["127.0.1.1"]),
        ("*", "node1", []),  # does not resolve here
        ("*", "fe80::1%eth0", ["fe80::1%eth0"]),  # link-local, not loopback
    ],
)
def test_no_trap(bind, host, resolved):
    assert addressing.loopback_trap(bind, host, resolved) is None


# -- who published a record --------------------------------------------------------

_INFO = ServerInfo("node-1.example.org", 4242, 1_700_000_000.25, "0.1.0")
_KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"


def test_record_with_info_round_trips_and_keeps_the_key():
    endpoint = Endpoint("10.0.0.1", 5000, _KEY)
    record = encode_record(endpoint, _INFO)
    assert read_record(record) == Record(endpoint, _INFO)
    # Clients only need the endpoint; the info does not change it.
    assert decode_record(record) == endpoint
    assert json.loads(record)["key"] == _KEY


def test_record_with_info_is_stable_text():
    # Refreshes must replace the record, not add a second one.
    endpoint = Endpoint("10.0.0.1", 5000)
    assert encode_record(endpoint, _INFO) == encode_record(endpoint, _INFO)


def test_older_records_still_decode_without_info():
    old = '{"host":"10.0.0.1","key":"' + _KEY + '","port":5000,"v":1}'
    assert read_record(old) == Record(Endpoint("10.0.0.1", 5000, _KEY), None)


@pytest.mark.parametrize(
    "fields",
    [
        {"hostname": 3, "pid": 1, "started": 1.0, "version": "x"},
        {"hostname": "h", "pid": "1", "started": 1.0, "version": "x"},
        {"hostname": "h", "pid": True, "started": 1.0, "version": "x"},
        {"hostname": "h", "pid": 1, "started": "yesterday", "version": "x"},
        {"hostname": "h", "pid": 1, "started": 1.0},
    ],
)
def test_malformed_info_leaves_the_endpoint_usable(fields):
    record = read_record(_record(**fields))
    assert record.endpoint == Endpoint("10.0.0.1", 5000)
    assert record.info is None


def test_key_fingerprint_is_short_and_tells_keys_apart():
    other = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
    assert key_fingerprint(_KEY).startswith("SHA256:")
    assert len(key_fingerprint(_KEY)) == len("SHA256:") + 12
    assert key_fingerprint(_KEY) != key_fingerprint(other)
    assert key_fingerprint("") == ""


def test_an_endpoint_hashes_by_its_fields_even_across_a_pickle():
    import pickle

    endpoint = Endpoint("10.0.0.1", 4000, "key")
    assert hash(endpoint) == hash(Endpoint("10.0.0.1", 4000, "key"))
    assert {endpoint: 1}[Endpoint("10.0.0.1", 4000, "key")] == 1
    assert Endpoint("10.0.0.1", 4000) != endpoint
    copy = pickle.loads(pickle.dumps(endpoint))
    assert copy == endpoint and hash(copy) == hash(endpoint)
