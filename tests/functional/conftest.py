"""Fixtures of the functional tests: a deployment per matchmaker kind."""

from __future__ import annotations

import os
from dataclasses import dataclass

import oslo_messaging
import pytest

from harness.config import write_config
from tests.functional import helpers
from tests.functional.curve_keys import Keys
from zmqdriver import options


@dataclass
class Deployment:
    """Where processes of one test deployment meet: a URL and a config file."""

    kind: str
    url: str
    config_file: str
    tmpdir: str

    def conf(self, **overrides):
        conf = helpers.make_conf(self.config_file)
        options.register(conf)
        for name, value in overrides.items():
            conf.set_override(name, value, group="oslo_messaging_zmq")
        return conf

    def transport(self, conf=None, **kwargs):
        return oslo_messaging.get_rpc_transport(conf or self.conf(), **kwargs)

    def server(
        self,
        topic: str,
        server: str,
        exchange: str | None = None,
        mode: str = "threading",
        journal: str | None = None,
    ) -> helpers.ServerProcess:
        return helpers.ServerProcess(self.config_file, topic, server, exchange, mode, journal)


def _deployment(kind: str, tmpdir: str, request) -> Deployment:
    # A fresh key prefix per deployment keeps deployments sharing one Redis apart.
    prefix = helpers.unique("test")
    if kind == "zmq":
        url = "zmq://"
        options = {"zmq_matchmaker_path": os.path.join(tmpdir, "mm", "matchmaker.sqlite")}
    else:
        url = request.getfixturevalue(f"{kind}_server").url
        options = {}
    config_file = write_config(
        os.path.join(tmpdir, "zmq.conf"), url, zmq_matchmaker_prefix=prefix, **options
    )
    return Deployment(kind, url, config_file, tmpdir)


@pytest.fixture(params=["zmq", "redis"])
def deployment(request, tmp_path) -> Deployment:
    """A fresh deployment on the embedded matchmaker, then on Redis."""
    return _deployment(request.param, str(tmp_path), request)


@pytest.fixture
def etcd_deployment(request, tmp_path) -> Deployment:
    """A fresh deployment on the etcd matchmaker only (for etcd-specific faults)."""
    return _deployment("etcd", str(tmp_path), request)


@pytest.fixture
def redis_deployment(request, tmp_path) -> Deployment:
    """A fresh deployment on the Redis matchmaker only (for Redis-specific faults)."""
    return _deployment("redis", str(tmp_path), request)


@pytest.fixture(scope="module", params=["zmq", "redis"])
def shared_deployment(request, tmp_path_factory) -> Deployment:
    """One deployment per module and matchmaker, for tests sharing servers."""
    return _deployment(request.param, str(tmp_path_factory.mktemp("deploy")), request)


@pytest.fixture
def keys(tmp_path) -> Keys:
    """CURVE key pairs 'server', 'client' and 'stranger'; 'client' is the allowed one."""
    return Keys(tmp_path)
