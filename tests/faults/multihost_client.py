"""The client of the multi-host test, run inside one host's namespace.

    python -m tests.faults.multihost_client --config-file F --topic T --servers S1,S2

Talks to the RPC servers (tests/functional/rpc_server_proc.py) of topic T through
oslo.messaging's public API only and prints one JSON summary line; the test
judges it, so this program records what happened rather than asserting.
"""

import argparse
import json
import time
import warnings

import oslo_messaging
from oslo_config import cfg

CALL_TIMEOUT = 30
ARRIVAL_TIMEOUT = 30.0
TOPIC_CALLS = 10
CASTS = 20


def main() -> None:
    warnings.simplefilter("ignore")  # library deprecation notices: noise here
    parser = argparse.ArgumentParser()
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--servers", required=True, help="comma-separated server names")
    args = parser.parse_args()
    servers = args.servers.split(",")

    cfg.CONF(["--config-file", args.config_file])
    transport = oslo_messaging.get_rpc_transport(cfg.CONF)

    def client(**kwargs):
        target = oslo_messaging.Target(topic=args.topic, **kwargs)
        return oslo_messaging.get_rpc_client(transport, target, timeout=CALL_TIMEOUT)

    anyone = client()
    directed = {name: client(server=name) for name in servers}
    summary = {}

    summary["echo"] = anyone.call({}, "echo", value={"text": "héllo", "n": [1, 2.5, None]})
    summary["whoami"] = [anyone.call({}, "whoami") for _ in range(TOPIC_CALLS)]
    summary["directed"] = {name: c.call({}, "whoami") for name, c in directed.items()}

    # Casts to the topic are spread over the servers: every tag must arrive at
    # exactly one of them. They are one-way, so wait for them to be recorded.
    tags = [f"cast-{i}" for i in range(CASTS)]
    for tag in tags:
        anyone.cast({}, "record", tag=tag)
    summary["casts"] = wait_recorded(directed, "cast-", len(tags))

    client(fanout=True).cast({}, "record", tag="fanout")
    summary["fanout"] = {
        name: wait_recorded({name: c}, "fanout", 1)[name] for name, c in directed.items()
    }

    transport.cleanup()
    print(json.dumps(summary, sort_keys=True), flush=True)


def wait_recorded(clients: dict, prefix: str, total: int) -> dict:
    """What each server recorded under ``prefix``, once ``total`` tags are in (or at timeout)."""
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    while True:
        recorded = {name: c.call({}, "recorded", prefix=prefix) for name, c in clients.items()}
        if sum(map(len, recorded.values())) >= total or time.monotonic() > deadline:
            return recorded
        time.sleep(0.05)


if __name__ == "__main__":
    main()
