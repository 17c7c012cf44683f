"""oslo.messaging's own driver-agnostic functional suite, run against our URLs.

The suite lives in the installed oslo.messaging package and monkey-patches
eventlet on import, so it runs in a child pytest process (which also keeps
it from patching this one). Its RPC cases (CallTestCase, CastTestCase) must
pass with zero failures; the only skips allowed are the two the suite
reserves for RabbitMQ, which our own tests cover (test_rpc.py). Its
notification cases (NotifyTestCase) must pass with zero failures and no skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

RPC_CASES = "CallTestCase or CastTestCase"
NOTIFY_CASES = "NotifyTestCase"
RABBIT_ONLY = {"test_mandatory_call", "test_monitor_long_call"}


def run_suite(url: str, selection: str, tmp_path) -> dict[str, str]:
    """Run the selected oslo cases against ``url``; returns test name -> outcome."""
    report = tmp_path / "report.xml"
    runtime_dir = tmp_path / "runtime"
    runtime_dir.mkdir(mode=0o700)
    env = dict(
        os.environ,
        RPC_TRANSPORT_URL=url,
        NOTIFY_TRANSPORT_URL=url,
        # The embedded matchmaker keeps its file under XDG_RUNTIME_DIR: a
        # private one keeps this run apart from anything else on the machine.
        XDG_RUNTIME_DIR=str(runtime_dir),
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            # Keep sys.path's order: with the default (prepend) mode, pytest puts
            # site-packages (the suite's home) first, so an installed zmqdriver's
            # entry points would shadow those of a checkout on PYTHONPATH.
            "--import-mode=append",
            "--timeout",
            "120",
            "--pyargs",
            "oslo_messaging.tests.functional.test_functional",
            "-k",
            selection,
            f"--junitxml={report}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname').rsplit('.', 1)[-1]}.{case.get('name')}"
        kinds = {child.tag for child in case}
        outcome = next((k for k in ("failure", "error", "skipped") if k in kinds), "passed")
        outcomes[name] = outcome
    return outcomes


def url_for(kind: str, request) -> str:
    """The transport URL of a matchmaker kind, its server started by a fixture."""
    if kind == "zmq":
        return "zmq://"
    return request.getfixturevalue(f"{kind}_server").url


@pytest.mark.parametrize("kind", ["zmq", "redis", "etcd"])
def test_rpc_conformance(kind, request, tmp_path):
    url = url_for(kind, request)
    outcomes = run_suite(url, RPC_CASES, tmp_path)
    failed = {name: o for name, o in outcomes.items() if o in ("failure", "error")}
    skipped = {name.split(".")[-1] for name, o in outcomes.items() if o == "skipped"}
    passed = [name for name, o in outcomes.items() if o == "passed"]
    assert not failed, failed
    assert skipped <= RABBIT_ONLY, skipped
    assert len(passed) >= 11, outcomes


@pytest.mark.parametrize("kind", ["zmq", "redis", "etcd"])
def test_notify_conformance(kind, request, tmp_path):
    url = url_for(kind, request)
    outcomes = run_suite(url, NOTIFY_CASES, tmp_path)
    assert len(outcomes) >= 7, outcomes
    assert set(outcomes.values()) == {"passed"}, outcomes
