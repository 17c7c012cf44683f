"""Small helpers shared by the unit tests."""

from __future__ import annotations

import time
from collections.abc import Callable

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


def eventually(condition: Callable[[], bool], timeout: float, poll: float = 0.05) -> bool:
    """Poll ``condition``; True as soon as it holds, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True
