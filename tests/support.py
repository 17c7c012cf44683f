"""Small helpers shared by the unit tests."""

from __future__ import annotations

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
