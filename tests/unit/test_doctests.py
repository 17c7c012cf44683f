"""The examples in the docstrings of the pure modules are tests too."""

import doctest
import importlib

import pytest

MODULES = [
    "zmqdriver.addressing",
    "zmqdriver.protocol",
    "zmqdriver.throttle",
    "zmqdriver.backoff",
    "zmqdriver.reregister",
    "zmqdriver.matchmaker",
    "zmqdriver.matchmaker.redis",
    "zmqdriver.notify.redis_store",
    "zmqdriver.notify.store",
    "zmqdriver.status.model",
    "zmqdriver.status.render",
    "zmqdriver.keyfiles",
    "zmqdriver.keys",
    "zmqdriver.backends.redis",
    "zmqdriver.backends.redis_tls",
    "zmqdriver.backends.sentinel",
    "zmqdriver.backends.sqlitefile",
    "zmqdriver.backends.etcd",
    "zmqdriver.matchmaker.etcd",
    "harness.wait",
    "zmqdriver.eventloop.pauses",
    "zmqdriver.rpc.outbox",
    "bench.scale.faults",
    "bench.scale.registrations",
    "bench.scale.sends",
    "bench.scale.plot",
    "bench.targets",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module)
    assert result.failed == 0
    assert result.attempted > 0, f"{name} has no examples left: drop it from MODULES"
