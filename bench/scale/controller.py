"""A controller process: ``python -m bench.scale.controller --run-dir D --name ctl-0``.

A conductor (RPC server on topic ``conductor``, ``server=<name>``) that answers the hosts'
periodic reports, and a listener of the one notification pool. It counts both.
"""

from __future__ import annotations

import argparse
import threading
import time

import oslo_messaging

from bench.scale import common
from bench.scale.common import Cost, RunDir


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reports = 0
        self.notifications: dict[str, int] = {}  # message_id -> times seen


class ConductorEndpoint:
    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def report(self, ctxt: dict, host: str) -> str:
        with self.counter.lock:
            self.counter.reports += 1
        return "ok"


class NotificationEndpoint:
    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        with self.counter.lock:
            seen = self.counter.notifications
            seen[metadata["message_id"]] = seen.get(metadata["message_id"], 0) + 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args()
    common.setup_process()
    run = RunDir(args.run_dir)
    conf = common.load_conf(args.config_file)
    counter = Counter()
    transport = oslo_messaging.get_rpc_transport(conf, url=args.url)
    server = oslo_messaging.get_rpc_server(
        transport,
        oslo_messaging.Target(topic=common.CONDUCTOR, server=args.name),
        [ConductorEndpoint(counter)],
        executor="threading",
    )
    listener = oslo_messaging.get_notification_listener(
        oslo_messaging.get_notification_transport(conf, url=args.url),
        [oslo_messaging.Target(topic=common.NOTIFY_TOPIC)],
        [NotificationEndpoint(counter)],
        executor="threading",
        pool=common.POOL,
    )
    server.start()
    listener.start()
    print(f"READY {args.name}", flush=True)
    go = common.wait_for(run, "go", args.parent)
    out: dict = {}
    while not run.stop_requested():
        if "start" not in out and time.time() >= go["start"]:
            out["start"] = Cost.now().asdict()
        if "loaded" not in out and time.time() >= go["start"] + go["duration"]:
            out["loaded"] = Cost.now().asdict()
        time.sleep(0.2)
    out.setdefault("loaded", Cost.now().asdict())
    with counter.lock:
        out["reports"] = counter.reports
        out["notifications"] = dict(counter.notifications)
    run.write(f"result-{args.name}", out)
    listener.stop()
    server.stop()
    listener.wait()
    server.wait()
    transport.cleanup()


if __name__ == "__main__":
    main()
