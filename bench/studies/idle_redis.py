"""Redis commands per second of idle RPC servers: what a host costs Redis doing nothing.

    python -m bench.studies.idle_redis [--hosts 20] [--seconds 30]

Starts a private redis-server, then ``--hosts`` RPC servers (topic ``compute``,
``server=host-N``, one transport each, as the scale harness's hosts) in this process,
which then idle; after ``--settle`` seconds counts Redis's commands (scripts' own
commands included, as ``INFO`` counts them) over ``--seconds`` and prints them per host,
by command, and how many processes subscribe to the changes channel.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings

import oslo_messaging
from oslo_config import cfg

from harness.config import write_config
from harness.redis_server import RedisServer
from zmqdriver.matchmaker.redis import changes_channel


class Endpoint:
    def __init__(self, name: str) -> None:
        self.name = name

    def whoami(self, ctxt: dict) -> str:
        return self.name


def start_servers(config: str, count: int) -> list[tuple]:
    """``count`` (server, transport) pairs, each host with its own transport."""
    started = []
    for index in range(count):
        conf = cfg.ConfigOpts()
        conf(["--config-file", config])
        transport = oslo_messaging.get_rpc_transport(conf)
        name = f"host-{index}"
        target = oslo_messaging.Target(topic="compute", server=name)
        server = oslo_messaging.get_rpc_server(transport, target, [Endpoint(name)])
        server.start()
        started.append((server, transport))
    return started


def count_commands(redis: RedisServer, seconds: float, hosts: int) -> dict:
    """Redis's commands over ``seconds``: per second, per host per second, by command."""
    client = redis.client()
    before, before_by = client.info(), client.info("commandstats")
    began = time.monotonic()
    time.sleep(seconds)
    after, after_by = client.info(), client.info("commandstats")
    elapsed = time.monotonic() - began
    total = after["total_commands_processed"] - before["total_commands_processed"]
    by_command = {
        name.removeprefix("cmdstat_"): stat["calls"] - before_by.get(name, {}).get("calls", 0)
        for name, stat in after_by.items()
    }
    return {
        "seconds": round(elapsed, 1),
        "commands_per_s": round(total / elapsed, 2),
        "per_host": round(total / elapsed / hosts, 3),
        "per_host_by_command": {
            name: round(calls / elapsed / hosts, 3) for name, calls in by_command.items() if calls
        },
        "subscribers": client.pubsub_numsub(changes_channel("zmqdriver"))[0][1],
    }


def main() -> None:
    warnings.simplefilter("ignore")  # library deprecation notices
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=5.0, help="idle this long first")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="zmqdriver-idle-redis-")
    redis = RedisServer(workdir)
    redis.start()
    started: list[tuple] = []
    try:
        config = write_config(
            os.path.join(workdir, "zmq.conf"),
            redis.url,
            rpc_zmq_host="127.0.0.1",
            rpc_zmq_bind_address="127.0.0.1",
        )
        started = start_servers(config, args.hosts)
        time.sleep(args.settle)
        print(json.dumps({"hosts": args.hosts, **count_commands(redis, args.seconds, args.hosts)}))
    finally:
        for server, transport in started:
            server.stop()
            server.wait()
            transport.cleanup()
        redis.stop()


if __name__ == "__main__":
    main()
