"""Pluggable discovery: which endpoints serve which target.

A matchmaker is chosen by the transport URL scheme: ``zmq://`` uses the
embedded ``local`` store, ``zmq+NAME://`` loads the plugin ``NAME`` from the
``zmqdriver.matchmaker`` entry point namespace (``redis`` ships with us).
"""

from __future__ import annotations

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


def load(conf: cfg.ConfigOpts, url) -> MatchMaker:
    """Instantiate the matchmaker named by ``url`` (an oslo TransportURL)."""
    name = name_from_url(url.transport or "zmq")
    try:
        manager = stevedore_driver.DriverManager(
            NAMESPACE, name, invoke_on_load=True, invoke_args=(conf, url)
        )
    except stevedore_driver.NoMatches as exc:
        raise MatchMakerError(
            f"Unknown matchmaker {name!r} in transport URL scheme {url.transport!r}; "
            f"install a plugin in entry point namespace {NAMESPACE!r}"
        ) from exc
    return manager.driver
