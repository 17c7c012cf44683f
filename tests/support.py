"""Small helpers shared by the unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import oslo_messaging
from oslo_config import cfg

from zmqdriver import options


def make_conf(**overrides) -> cfg.ConfigOpts:
    """A fresh ConfigOpts with our options registered and ``overrides`` applied."""
    conf = cfg.ConfigOpts()
    options.register(conf)
    conf([])
    for name, value in overrides.items():
        conf.set_override(name, value, group=options.GROUP)
    return conf


def parse(conf: cfg.ConfigOpts, url: str) -> oslo_messaging.TransportURL:
    return oslo_messaging.TransportURL.parse(conf, url)


class _Server(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


S = TypeVar("S", bound=_Server)


def throwaway_servers(
    make: Callable[[Path, tuple[str, ...]], S], base: Path, name: str
) -> Iterator[Callable[..., S]]:
    """A fixture body: ``start(*extra_args)`` starts another server (``make(directory,
    extra_args)``, a directory of its own under ``base``); all are stopped at the end."""
    servers: list[S] = []

    def start(*extra_args: str) -> S:
        server = make(base / f"{name}{len(servers)}", extra_args)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()
