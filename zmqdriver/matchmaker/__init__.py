"""Pluggable discovery: which endpoints serve which target.

A matchmaker is chosen by the transport URL scheme: ``zmq://`` uses the
embedded ``local`` store, ``zmq+NAME://`` loads the plugin ``NAME`` from the
``zmqdriver.matchmaker`` entry point namespace (``redis``, ``sentinel`` and
``etcd`` ship with us).
"""

from __future__ import annotations

from importlib import metadata

from oslo_config import cfg
from stevedore import driver as stevedore_driver

from zmqdriver.matchmaker.base import MatchMaker, MatchMakerError, MatchMakerUnavailable

NAMESPACE = "zmqdriver.matchmaker"
DEFAULT = "local"
# The plugin contract of NAMESPACE (doc/deployment.md, "Matchmaker plugins"). 2: the
# notification store comes from the matchmaker's ``backend``, not from its own method.
CONTRACT_VERSION = 2

__all__ = [
    "CONTRACT_VERSION",
    "MatchMaker",
    "MatchMakerError",
    "MatchMakerUnavailable",
    "load",
    "name_from_url",
]


def name_from_url(transport: str) -> str:
    """Return the matchmaker plugin name for a transport URL scheme.

    >>> name_from_url("zmq")
    'local'
    >>> name_from_url("zmq+redis")
    'redis'
    """
    _, _, name = transport.partition("+")
    return name or DEFAULT


def unknown_name_message(name: str, scheme: str, valid: list[str]) -> str:
    """The one-line error for a ``zmq+NAME://`` whose NAME no plugin has.

    >>> print(unknown_name_message("rediss", "zmq+rediss", ["local", "redis", "sentinel"]))
    Unknown matchmaker 'rediss' in transport URL scheme 'zmq+rediss'; valid: zmq:// (local), \
zmq+redis://, zmq+sentinel://. For TLS write zmq+redis://...?tls=true: TLS is a query option \
of the URL, not a scheme
    >>> print(unknown_name_message("zookeeper", "zmq+zookeeper", ["local", "redis"]))
    Unknown matchmaker 'zookeeper' in transport URL scheme 'zmq+zookeeper'; valid: zmq:// (local), \
zmq+redis://; other matchmakers are plugins in entry point namespace 'zmqdriver.matchmaker'
    """
    schemes = ", ".join(
        "zmq:// (local)" if valid_name == DEFAULT else f"zmq+{valid_name}://"
        for valid_name in [DEFAULT, *sorted(set(valid) - {DEFAULT})]
    )
    message = f"Unknown matchmaker {name!r} in transport URL scheme {scheme!r}; valid: {schemes}"
    if name.endswith("s") and name[:-1] in valid:
        # redis-py spells TLS "rediss://"; here TLS is an option of the URL.
        return (
            f"{message}. For TLS write zmq+{name[:-1]}://...?tls=true: TLS is a query option "
            "of the URL, not a scheme"
        )
    return f"{message}; other matchmakers are plugins in entry point namespace {NAMESPACE!r}"


def load(conf: cfg.ConfigOpts, url) -> MatchMaker:
    """Instantiate the matchmaker named by ``url`` (an oslo TransportURL)."""
    name = name_from_url(url.transport or "zmq")
    try:
        manager = stevedore_driver.DriverManager(
            NAMESPACE,
            name,
            invoke_on_load=True,
            invoke_args=(conf, url),
            # No "Could not load NAME" log line: the error below says more. Newer
            # stevedore deprecates this flag for on_missing_entrypoints_callback=None,
            # but its DriverManager (5.6 to 5.10 at least) drops that argument.
            warn_on_missing_entrypoint=False,
        )
    except stevedore_driver.NoMatches as exc:
        valid = [entry_point.name for entry_point in metadata.entry_points(group=NAMESPACE)]
        raise MatchMakerError(unknown_name_message(name, url.transport, valid)) from exc
    return manager.driver
