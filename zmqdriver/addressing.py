"""Addressing: oslo Targets -> matchmaker keys, endpoints <-> matchmaker records.

Pure functions only, so every rule about names lives here and is unit tested.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import quote, unquote

DEFAULT_EXCHANGE = "openstack"


def _part(name: str) -> str:
    # Quote every component so a '/' or ':' inside a topic can never make two
    # different targets share a key.
    return quote(name, safe="")


@functools.lru_cache(maxsize=4096)  # on every cast and call; quoting costs a few us
def rpc_key(prefix: str, exchange: str, topic: str, server: str | None = None) -> str:
    """The matchmaker key under which servers of a target register.

    >>> rpc_key("zmqdriver", "openstack", "compute")
    'zmqdriver/rpc/openstack/compute'
    >>> rpc_key("zmqdriver", "openstack", "compute", "host/1")
    'zmqdriver/rpc/openstack/compute/host%2F1'
    """
    parts = [prefix, "rpc", _part(exchange), _part(topic)]
    if server:
        parts.append(_part(server))
    return "/".join(parts)


def parse_rpc_key(prefix: str, key: str) -> tuple[str, str, str | None] | None:
    """``(exchange, topic, server)`` of a key made by :func:`rpc_key`; None for other keys.

    >>> parse_rpc_key("zmqdriver", "zmqdriver/rpc/openstack/compute/host%2F1")
    ('openstack', 'compute', 'host/1')
    >>> parse_rpc_key("zmqdriver", "zmqdriver/rpc/openstack/compute")
    ('openstack', 'compute', None)
    >>> parse_rpc_key("zmqdriver", "zmqdriver/generation") is None
    True
    """
    head = f"{prefix}/rpc/"
    if not key.startswith(head):
        return None
    parts = [unquote(part) for part in key[len(head) :].split("/")]
    if len(parts) == 2:
        return parts[0], parts[1], None
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return None


def parse_notification_stream(prefix: str, stream: str) -> tuple[str, str] | None:
    """``(exchange, topic.priority)`` of a stream made by :func:`notification_stream`.

    >>> parse_notification_stream("zmqdriver", "zmqdriver/notify/openstack/notifications.info")
    ('openstack', 'notifications.info')
    """
    head = f"{prefix}/notify/"
    parts = stream[len(head) :].split("/") if stream.startswith(head) else []
    if len(parts) != 2:
        return None
    return unquote(parts[0]), unquote(parts[1])


@functools.lru_cache(maxsize=4096)  # on every notification, as rpc_key on every call
def notification_stream(prefix: str, exchange: str, topic_priority: str) -> str:
    """The store stream of the notifications of one ``topic.priority``.

    >>> notification_stream("zmqdriver", "openstack", "notifications.info")
    'zmqdriver/notify/openstack/notifications.info'
    """
    return "/".join([prefix, "notify", _part(exchange), _part(topic_priority)])


def pool_of_group(group: str) -> str | None:
    """The pool a consumer group stands for (None: listeners without a pool).

    >>> pool_of_group("pool/metering"), pool_of_group("nopool")
    ('metering', None)
    """
    return unquote(group[len("pool/") :]) if group.startswith("pool/") else None


def notification_group(pool: str | None) -> str:
    """The consumer group of a listener pool; listeners without a pool share one.

    >>> notification_group(None), notification_group("metering")
    ('nopool', 'pool/metering')
    """
    return f"pool/{_part(pool)}" if pool else "nopool"


def target_exchange(target, default_exchange: str | None) -> str:
    """The exchange a target addresses: its own, the transport's, or 'openstack'."""
    return target.exchange or default_exchange or DEFAULT_EXCHANGE


def describe_target(target) -> str:
    """A target as error messages and logs name it.

    >>> import oslo_messaging
    >>> describe_target(oslo_messaging.Target(topic="compute", server="host-1"))
    "target(topic='compute', server='host-1')"
    >>> describe_target(oslo_messaging.Target(exchange="nova", topic="compute", fanout=True))
    "target(exchange='nova', topic='compute', fanout)"
    """
    parts = [f"topic={target.topic!r}"]
    if target.exchange:
        parts.insert(0, f"exchange={target.exchange!r}")
    if target.server:
        parts.append(f"server={target.server!r}")
    if target.fanout:
        parts.append("fanout")
    return "target(" + ", ".join(parts) + ")"


class Endpoint(NamedTuple):
    """Where a server listens: a ZeroMQ TCP endpoint, and its CURVE public key if any.

    The key takes part in equality: a server that restarts on the same port
    with another key is another peer, so clients open a fresh connection
    with the right key instead of reusing one that can never authenticate.
    ``""`` (not None) means "no key", so endpoints always stay comparable.

    A tuple, not a dataclass: endpoints key the dicts every message goes
    through (windows, connections, suspects), several times per message in
    two threads, and a tuple hashes and compares in C.
    """

    host: str
    port: int
    key: str = ""

    @property
    def uri(self) -> str:
        """The ZeroMQ connect string, with brackets for IPv6 literals."""
        host = f"[{self.host}]" if _is_ipv6(self.host) else self.host
        return f"tcp://{host}:{self.port}"

    def __str__(self) -> str:
        return self.uri


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False


RECORD_VERSION = 1

# ZeroMQ's Z85 alphabet (RFC 32); a CURVE public key is 32 bytes, 40 characters.
Z85_ALPHABET = (
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)
_Z85_VALUE = {char: value for value, char in enumerate(Z85_ALPHABET)}
Z85_KEY_LENGTH = 40


def is_z85_key(key: object) -> bool:
    """True for a Z85-encoded 32-byte key: 40 characters that decode without overflow."""
    if not isinstance(key, str) or len(key) != Z85_KEY_LENGTH:
        return False
    if any(char not in _Z85_VALUE for char in key):
        return False
    # Every 5 characters encode 32 bits; some strings of the alphabet overflow.
    for start in range(0, Z85_KEY_LENGTH, 5):
        value = 0
        for char in key[start : start + 5]:
            value = value * 85 + _Z85_VALUE[char]
        if value >= 1 << 32:
            return False
    return True


@dataclass(frozen=True)
class ServerInfo:
    """Who published a record, for operators (``zmqdriver-status``); clients ignore it.

    ``started`` is the server's start as a Unix time. Every field is fixed for
    the life of a server, so its record stays the same string and refreshes
    replace it instead of adding another.
    """

    hostname: str
    pid: int
    started: float
    version: str


@dataclass(frozen=True)
class Record:
    """A decoded matchmaker record: where to connect, and who published it.

    ``info`` is None for records of older servers (only v/host/port/key).
    """

    endpoint: Endpoint
    info: ServerInfo | None = None


def encode_record(endpoint: Endpoint, info: ServerInfo | None = None) -> str:
    """The matchmaker record a server publishes for ``endpoint``.

    The ``key`` field is present only for CURVE servers, and the ``info``
    fields only when given, so v stays 1: older readers ignore the extra
    fields, newer ones accept their absence.

    >>> encode_record(Endpoint("10.0.0.1", 4000))
    '{"host":"10.0.0.1","port":4000,"v":1}'
    >>> encode_record(Endpoint("10.0.0.1", 4000), ServerInfo("node-1", 42, 1700000000.5, "0.1.0"))
    '{"host":"10.0.0.1","hostname":"node-1","pid":42,"port":4000,"started":1700000000.5,"v":1,\
"version":"0.1.0"}'
    """
    data: dict = {"v": RECORD_VERSION, "host": endpoint.host, "port": endpoint.port}
    if endpoint.key:
        data["key"] = endpoint.key
    if info is not None:
        data.update(
            hostname=info.hostname, pid=info.pid, started=info.started, version=info.version
        )
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def decode_record(record: str) -> Endpoint:
    """Parse and validate a matchmaker record; ValueError says what is wrong."""
    return read_record(record).endpoint


def read_record(record: str) -> Record:
    """Parse and validate a matchmaker record, with its server info when it has any.

    >>> read_record('{"host":"10.0.0.1","port":4000,"v":1}')
    Record(endpoint=Endpoint(host='10.0.0.1', port=4000, key=''), info=None)
    >>> read_record(encode_record(Endpoint("h", 1), ServerInfo("h", 7, 1.0, "0.1"))).info.pid
    7
    """
    try:
        data = json.loads(record)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"matchmaker record is not JSON: {record[:80]!r}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"matchmaker record is not an object: {record[:80]!r}")
    if data.get("v") != RECORD_VERSION:
        raise ValueError(f"matchmaker record has unknown version {data.get('v')!r}")
    host, port = data.get("host"), data.get("port")
    if not isinstance(host, str) or not _valid_host(host):
        raise ValueError(f"matchmaker record has an invalid host {host!r}")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"matchmaker record has an invalid port {port!r}")
    key = data.get("key", "")
    if "key" in data and not is_z85_key(key):
        raise ValueError(f"matchmaker record has an invalid CURVE key {str(key)[:60]!r}")
    return Record(Endpoint(host, port, key), _server_info(data))


def _server_info(data: dict) -> ServerInfo | None:
    # Display only: a malformed info field must not make a usable endpoint unusable.
    hostname, pid, started, version = (
        data.get("hostname"),
        data.get("pid"),
        data.get("started"),
        data.get("version"),
    )
    if not isinstance(hostname, str) or not isinstance(version, str):
        return None
    if not isinstance(pid, int) or isinstance(pid, bool):
        return None
    if not isinstance(started, int | float) or isinstance(started, bool):
        return None
    return ServerInfo(hostname, pid, float(started), version)


def key_fingerprint(key: str) -> str:
    """A short, stable name for a CURVE public key, for people to compare.

    The first 12 hex digits of the SHA-256 of the key's Z85 text: enough to
    tell keys apart at a glance; ``""`` when there is no key.

    >>> key_fingerprint("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7")
    'SHA256:84112785d109'
    >>> key_fingerprint("")
    ''
    """
    if not key:
        return ""
    return "SHA256:" + hashlib.sha256(key.encode("ascii")).hexdigest()[:12]


def _valid_host(host: str) -> bool:
    if not host or len(host) > 253:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    return all(
        label and len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
        for label in labels
    )


def binds_everywhere(bind_address: str) -> bool:
    """``rpc_zmq_bind_address`` means every interface (``*``, ``0.0.0.0``, ``::``).

    >>> [binds_everywhere(a) for a in ("*", "0.0.0.0", "::", "127.0.0.1", "eth0")]
    [True, True, True, False, False]
    """
    if bind_address == "*":
        return True
    try:
        return ipaddress.ip_address(bind_address).is_unspecified
    except ValueError:
        return False  # an interface name: one interface


def loopback_trap(bind_address: str, host: str, resolved: list[str]) -> str | None:
    """Why publishing ``host`` will strand clients on other hosts, or None.

    A server binding every interface publishes ``host`` (``rpc_zmq_host``,
    by default the hostname) for clients everywhere. When that name resolves
    only to loopback addresses here (Debian maps the hostname to 127.0.1.1 in
    /etc/hosts), clients that resolve it the same way reach their own host,
    not this one: the classic multi-host trap. ``resolved`` is what ``host``
    resolves to on this host (the caller does the lookup).

    >>> loopback_trap("*", "node1", ["127.0.1.1"]) is not None
    True
    >>> loopback_trap("*", "node1", ["10.0.0.5", "127.0.1.1"]) is None
    True
    >>> loopback_trap("127.0.0.1", "127.0.0.1", ["127.0.0.1"]) is None  # loopback on purpose
    True
    >>> loopback_trap("*", "node1", []) is None  # unresolvable: not ours to judge here
    True
    """
    if not binds_everywhere(bind_address) or not resolved:
        return None
    loopback = []
    for address in resolved:
        try:
            if not ipaddress.ip_address(address.split("%", 1)[0]).is_loopback:
                return None
        except ValueError:
            return None
        loopback.append(address)
    return (
        f"rpc_zmq_host {host!r}, the address this server publishes, resolves to the loopback "
        f"address {', '.join(sorted(set(loopback)))} here, while it binds every interface "
        f"(rpc_zmq_bind_address={bind_address!r}): clients that resolve it the same way reach "
        "their own host, not this one. Set rpc_zmq_host to a name or address other hosts reach "
        "this one by (or fix the name's entry in /etc/hosts)"
    )
