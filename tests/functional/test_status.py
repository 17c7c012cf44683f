"""zmqdriver-status against real servers, on the embedded matchmaker and on Redis.

Servers run in their own processes; the command runs as operators run it
(its own process, the services' config file), and the exporter is scraped
over HTTP and its page rendered by a real headless Chromium.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.config import write_config
from harness.wait import wait_until
from tests.functional import helpers
from tests.functional.curve_keys import keytool, role_config, server_config
from tests.functional.helpers import REPO, send_notifications, unique
from zmqdriver.addressing import key_fingerprint

TIMEOUT = 120


def status(config_file: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``zmqdriver-status --config-file F ARGS`` as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "zmqdriver.status.cli", "--config-file", config_file, *args],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def status_json(config_file: str, *args: str) -> tuple[int, dict]:
    done = status(config_file, *args, "--json")
    return done.returncode, json.loads(done.stdout)


def servers_of(data: dict, topic: str) -> dict[str, dict]:
    return {
        server["server"]: server
        for target in data["targets"]
        if target["topic"] == topic
        for server in target["servers"]
    }


@pytest.fixture
def servers(deployment):
    started: list[helpers.ServerProcess] = []

    def start(topic: str, name: str, config_file: str | None = None) -> helpers.ServerProcess:
        server = helpers.ServerProcess(config_file or deployment.config_file, topic, name)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def test_targets_and_ping_show_live_servers_and_name_a_killed_one(deployment, servers):
    topic, other = unique("status"), unique("doomed")
    a, b = servers(topic, "node-a"), servers(topic, "node-b")
    doomed = servers(other, "node-c")

    code, data = status_json(deployment.config_file, "targets")
    assert code == 0
    listed = servers_of(data, topic)
    assert set(listed) == {"node-a", "node-b"}
    assert listed["node-a"]["pid"] == a.proc.pid and listed["node-b"]["pid"] == b.proc.pid
    for server in listed.values():
        assert server["hostname"] and server["version"] and server["started"]
        assert server["address"].startswith("tcp://")
        assert 0 < server["expires_in"] <= 60

    code, data = status_json(deployment.config_file, "ping")
    assert code == 0
    for server in servers_of(data, topic).values():
        assert server["alive"] and server["rtt_ms"] > 0 and server["backlog"] == 0

    doomed.kill()  # SIGKILL: its record stays (on Redis) until it expires
    done = status(deployment.config_file, "ping", other, "--timeout", "1")
    assert done.returncode == 1, done
    assert other in done.stderr
    if deployment.kind == "redis":
        assert "NOT ANSWERING" in done.stdout and "node-c" in done.stdout
        assert f"target openstack/{other} has no live server" in done.stderr
    else:
        # The embedded matchmaker sees the process is gone and drops its records.
        assert "no server is registered" in done.stderr

    # The rest still answers: pinging it alone succeeds.
    done = status(deployment.config_file, "ping", f"{topic}.node-b")
    assert done.returncode == 0, done
    assert "node-b" in done.stdout and "node-a" not in done.stdout


def test_ping_answers_while_every_executor_is_busy(deployment, servers):
    config_file = os.path.join(deployment.tmpdir, "two-threads.conf")
    with open(deployment.config_file) as source, open(config_file, "w") as target:
        # Two executor threads only, so three long casts keep them all busy.
        target.write(source.read().replace("[DEFAULT]", "[DEFAULT]\nexecutor_thread_pool_size = 2"))
    topic = unique("busy")
    servers(topic, "busy-1", config_file)
    transport = deployment.transport()
    try:
        client = helpers.client(transport, topic)
        for n in range(3):
            client.cast({}, "slow_record", tag=n, seconds=60)

        def backlog() -> int:
            code, data = status_json(deployment.config_file, "ping", topic)
            server = servers_of(data, topic)["busy-1"]
            assert code == 0 and server["alive"], server
            return server["backlog"]

        wait_until(lambda: backlog() >= 3, timeout=60, what="three casts in the backlog")
    finally:
        transport.cleanup()


def test_notifications_show_each_pools_backlog(deployment):
    topic = unique("events")
    send_notifications(deployment.config_file, topic, 3)
    code, data = status_json(deployment.config_file, "notifications")
    assert code == 0
    (stream,) = [s for s in data["streams"] if s["stream"] == f"openstack/{topic}.info"]
    assert stream["pool"] == "(no listener yet)"
    assert stream["backlog"] == 3
    assert stream["oldest_unread_age"] >= 0
    done = status(deployment.config_file, "notifications")
    assert f"openstack/{topic}.info" in done.stdout


# -- the exporter ------------------------------------------------------------------------


class Exporter:
    def __init__(self, config_file: str) -> None:
        cmd = [sys.executable, "-m", "zmqdriver.status.cli", "--config-file", config_file]
        self.proc = subprocess.Popen(
            [*cmd, "exporter", "--port", "0", "--timeout", "1"],
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=REPO),
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        assert "http://" in line, line
        self.url = line.split()[3]  # "zmqdriver-status exporter on URL (/metrics)"

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=TIMEOUT) as answer:
            return answer.read().decode()

    def samples(self) -> dict[tuple[str, frozenset], float]:
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(self.get("/metrics"))
            for sample in family.samples
        }

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


@pytest.fixture
def exporter(deployment):
    started: list[Exporter] = []
    yield lambda: started.append(Exporter(deployment.config_file)) or started[-1]
    for exp in started:
        exp.stop()


def counter(samples: dict, name: str, pid: int) -> float:
    return next(
        value
        for (sample, labels), value in samples.items()
        if sample == name and ("pid", str(pid)) in labels
    )


def test_metrics_parse_and_counters_move_with_traffic(deployment, servers, exporter):
    topic = unique("metrics")
    server = servers(topic, "m-1")
    scraper = exporter()
    before = scraper.samples()
    assert (
        before[
            (
                "zmqdriver_target_live_servers",
                frozenset({("exchange", "openstack"), ("topic", topic)}),
            )
        ]
        == 1
    )
    received = counter(before, "zmqdriver_requests_received_total", server.proc.pid)
    transport = deployment.transport()
    try:
        client = helpers.client(transport, topic)
        for n in range(5):
            assert client.call({}, "echo", value=n) == n
    finally:
        transport.cleanup()
    after = scraper.samples()
    assert counter(after, "zmqdriver_requests_received_total", server.proc.pid) == received + 5
    assert counter(after, "zmqdriver_requests_acked_total", server.proc.pid) >= received + 5


def chromium() -> str:
    """Debian's chromium, installed when missing (as test.sh does for redis-server)."""
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, check=True)
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium is not installed and cannot be installed here")
    return found


def test_the_status_page_renders_in_headless_chromium(deployment, servers, exporter, tmp_path):
    topic = unique("page")
    servers(topic, "page-1")
    send_notifications(deployment.config_file, unique("page-events"), 2)
    scraper = exporter()
    page = scraper.get("/")
    assert topic in page and "page-1" in page and "alive" in page
    assert "<script" not in page and "http" not in page.split("<body>")[1].replace(scraper.url, "")
    shot = tmp_path / "page.png"
    dom = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", scraper.url],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert topic in dom.stdout, dom.stderr[-2000:]
    subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1400,700",
            f"--screenshot={shot}",
            scraper.url,
        ],
        capture_output=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000


def test_with_curve_targets_show_the_key_and_ping_goes_through_curve(deployment, servers, keys):
    topic = unique("curve-status")
    servers(topic, "curve-1", server_config(deployment, keys))
    allowed = role_config(
        deployment,
        "status-client",
        zmq_curve_enabled=True,
        zmq_curve_secret_key_file=keys.secret("client"),
    )
    stranger = role_config(
        deployment,
        "status-stranger",
        zmq_curve_enabled=True,
        zmq_curve_secret_key_file=keys.secret("stranger"),
    )
    server_key = keytool("list", str(keys.dir)).split("server\t")[1].split()[0]

    code, data = status_json(allowed, "targets", topic)
    assert code == 0
    assert servers_of(data, topic)["curve-1"]["key_fingerprint"] == key_fingerprint(server_key)

    code, data = status_json(allowed, "ping", topic)
    assert code == 0 and servers_of(data, topic)["curve-1"]["alive"]

    # A key the server does not allow gets no answer, and the tool says why.
    done = status(stranger, "ping", topic, "--timeout", "2")
    assert done.returncode == 1, done
    assert f"target openstack/{topic} has no live server" in done.stderr
    assert "refused this client's CURVE key" in done.stdout


def test_targets_and_ping_through_sentinel(sentinel_url, tmp_path):
    config_file = write_config(
        str(tmp_path / "sentinel.conf"), sentinel_url, zmq_matchmaker_prefix=unique("sentinel")
    )
    topic = unique("sentinel-status")
    server = helpers.ServerProcess(config_file, topic, "s-1")
    try:
        code, data = status_json(config_file, "ping", topic)
        assert code == 0, data
        listed = servers_of(data, topic)["s-1"]
        assert listed["pid"] == server.proc.pid and listed["alive"]
    finally:
        server.kill()
