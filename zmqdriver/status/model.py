"""What ``zmqdriver-status`` knows, as plain data, and the pure rules that shape it.

Nothing here does I/O: ``collect`` fills these from the matchmaker, the
notification store and PINGs; ``render`` turns them into text, JSON or HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zmqdriver import addressing
from zmqdriver.addressing import Endpoint, ServerInfo
from zmqdriver.matchmaker.base import ListedRecord
from zmqdriver.notify.store import GroupBacklog
from zmqdriver.rpc.ping import PingResult


@dataclass(frozen=True)
class Server:
    """One server of a target, as its matchmaker record describes it."""

    endpoint: Endpoint
    info: ServerInfo | None  # None: an older server, whose record says only where
    name: str | None  # its ``server=`` (from its directed key), when known
    expires_in: float | None  # seconds; None: never, or unknown


@dataclass(frozen=True)
class Target:
    exchange: str
    topic: str
    servers: tuple[Server, ...]

    @property
    def label(self) -> str:
        return f"{self.exchange}/{self.topic}"


@dataclass
class Snapshot:
    """Everything one look found; any part may be missing, with ``problems`` saying why."""

    taken_at: float  # Unix time
    targets: list[Target] = field(default_factory=list)
    pings: dict[Endpoint, PingResult] | None = None  # None: not pinged
    backlogs: list[GroupBacklog] | None = None  # None: not looked at, or not available
    prefix: str = "zmqdriver"
    problems: list[str] = field(default_factory=list)


def build_targets(prefix: str, listed: list[ListedRecord]) -> list[Target]:
    """Group matchmaker records into targets, naming servers from their directed keys.

    A server registers under ``exchange/topic`` and ``exchange/topic/server``
    with the same record; the first lists it, the second gives its name.
    """
    by_target: dict[tuple[str, str], dict[Endpoint, Server]] = {}
    names: dict[tuple[str, str, Endpoint], str] = {}
    for item in listed:
        parsed = addressing.parse_rpc_key(prefix, item.key)
        try:
            record = addressing.read_record(item.record)
        except ValueError:
            continue  # clients skip it too (and log it)
        if parsed is None:
            continue
        exchange, topic, name = parsed
        servers = by_target.setdefault((exchange, topic), {})
        if name is not None:
            names[(exchange, topic, record.endpoint)] = name
        if name is None or record.endpoint not in servers:
            servers[record.endpoint] = Server(record.endpoint, record.info, None, item.expires_in)
    return [
        Target(
            exchange,
            topic,
            tuple(
                sorted(
                    (
                        Server(
                            s.endpoint,
                            s.info,
                            names.get((exchange, topic, s.endpoint)),
                            s.expires_in,
                        )
                        for s in servers.values()
                    ),
                    key=lambda s: (s.name or "", s.endpoint),
                )
            ),
        )
        for (exchange, topic), servers in sorted(by_target.items())
    ]


def select(targets: list[Target], spec: str | None) -> list[Target]:
    """The targets (and servers) ``spec`` names: ``topic``, ``topic.server`` or ``exchange/topic``.

    An exact topic wins over ``topic.server``, as topics may contain dots.

    >>> ts = [Target("openstack", "compute", (Server(Endpoint("h", 1), None, "n1", None),
    ...                                       Server(Endpoint("h", 2), None, "n2", None))),
    ...       Target("nova", "compute", ())]
    >>> [t.label for t in select(ts, "compute")]
    ['openstack/compute', 'nova/compute']
    >>> [(t.label, [s.name for s in t.servers]) for t in select(ts, "compute.n2")]
    [('openstack/compute', ['n2'])]
    >>> [t.label for t in select(ts, "nova/compute")]
    ['nova/compute']
    >>> select(ts, "nothing")
    []
    """
    if not spec:
        return targets
    exchange, _, topic = spec.rpartition("/")
    in_exchange = [t for t in targets if not exchange or t.exchange == exchange]
    exact = [t for t in in_exchange if t.topic == topic]
    if exact:
        return exact
    topic, _, name = topic.rpartition(".")
    picked = []
    for target in in_exchange:
        if target.topic == topic:
            servers = tuple(s for s in target.servers if s.name == name)
            if servers:
                picked.append(Target(target.exchange, target.topic, servers))
    return picked


def dead_targets(targets: list[Target], pings: dict[Endpoint, PingResult] | None) -> list[Target]:
    """Targets without a live server: no record at all, or (when pinged) none answering."""
    dead = []
    for target in targets:
        alive = [
            s
            for s in target.servers
            if pings is None or (s.endpoint in pings and pings[s.endpoint].alive)
        ]
        if not alive:
            dead.append(target)
    return dead


def processes(snapshot: Snapshot) -> dict[tuple[str, int], dict]:
    """The counters of each answering process, once per process (it may run several servers)."""
    found: dict[tuple[str, int], dict] = {}
    for result in (snapshot.pings or {}).values():
        body = result.body or {}
        if result.alive and isinstance(body.get("counters"), dict):
            found.setdefault((str(body.get("hostname")), int(body.get("pid", 0))), body["counters"])
    return found
