"""The examples and README command 1 work as documented."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.config import write_config
from tests.functional import helpers
from tests.functional.helpers import unique


def run_example(args: list[str], env: dict, timeout: float = 120) -> str:
    done = subprocess.run(
        [sys.executable, *args],
        cwd=helpers.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def private_env(tmp_path) -> dict:
    # The embedded matchmaker lives under XDG_RUNTIME_DIR: keep this run to itself.
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    return dict(os.environ, XDG_RUNTIME_DIR=str(runtime))


def test_readme_roundtrip_on_the_embedded_default(private_env):
    out = run_example(["examples/roundtrip.py"], private_env)
    assert "hello (from server1)" in out


def test_roundtrip_with_a_redis_config(redis_server, tmp_path, private_env):
    config = write_config(
        str(tmp_path / "redis.conf"), redis_server.url, zmq_matchmaker_prefix=unique("ex")
    )
    out = run_example(["examples/roundtrip.py", "--config-file", config], private_env)
    assert "hello (from server1)" in out


def test_notifier_examples_store_and_forward(deployment, private_env):
    topic = unique("example")
    config = ["--config-file", deployment.config_file, "--topic", topic]
    sent = run_example(["examples/notifier_client.py", *config, "--count", "3"], private_env)
    assert "sent 3 notifications" in sent
    out = run_example(["examples/notifier_server.py", *config, "--run-for", "3"], private_env)
    assert sorted(line.split(" ", 2)[2] for line in out.splitlines()) == [
        "{'n': 0}",
        "{'n': 1}",
        "{'n': 2}",
    ]


def test_a_config_error_is_one_line_and_debug_shows_the_traceback(tmp_path, private_env):
    # redis-py's spelling of TLS, as a user coming from it would write it.
    config = tmp_path / "bad.conf"
    config.write_text("[DEFAULT]\ntransport_url = zmq+rediss://127.0.0.1:6380\n")
    command = [sys.executable, "examples/rpc_client.py", "--config-file", str(config)]
    done = subprocess.run(
        command, cwd=helpers.REPO, env=private_env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("rpc_client.py: error: Unknown matchmaker 'rediss'")
    assert "zmq+redis://" in line and "?tls=true" in line and "--debug" in line

    debug = subprocess.run(
        [*command, "--debug"],
        cwd=helpers.REPO,
        env=private_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "Unknown matchmaker 'rediss'" in debug.stderr
