"""An RPC server process for the functional tests.

    python -m tests.functional.rpc_server_proc --config-file F --topic T --server S
        [--exchange E] [--mode threading|eventlet]

``--mode eventlet`` runs through ``python -m harness.green tests.functional.rpc_server_proc``,
monkey-patched before this module is imported.

Prints "READY" once serving; stops gracefully on SIGTERM.
"""

import argparse
import os
import signal
import time
import warnings

import oslo_messaging
from oslo_config import cfg

from tests.functional import remote_errors


class TestEndpoint:
    def __init__(self, name: str, journal: str | None = None) -> None:
        self.name = name
        self.casts: list = []
        self.sleepers = 0
        # Every recorded tag is also appended to the journal file, which
        # outlives a SIGKILL: fault tests count executions from it.
        self.journal = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if journal else None

    def echo(self, ctxt, value):
        return value

    def whoami(self, ctxt):
        return self.name

    def context(self, ctxt):
        return ctxt

    def record(self, ctxt, tag):
        self.casts.append(tag)
        if self.journal is not None:
            os.write(self.journal, f"{tag}\n".encode())  # one write: atomic, unbuffered

    def slow_record(self, ctxt, tag, seconds):
        time.sleep(seconds)
        self.casts.append(tag)

    def recorded(self, ctxt, prefix=""):
        return [tag for tag in self.casts if str(tag).startswith(prefix)]

    def fail(self, ctxt, message):
        raise ValueError(message)

    def fail_custom(self, ctxt, message):
        raise remote_errors.InventoryError(message)

    def sleep(self, ctxt, seconds):
        self.sleepers += 1
        time.sleep(seconds)
        return seconds

    def sleeping(self, ctxt):
        """How many sleep calls have started: lets a test know a call arrived."""
        return self.sleepers


def main() -> None:
    warnings.simplefilter("ignore")  # library deprecation notices: noise here
    parser = argparse.ArgumentParser()
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--exchange")
    parser.add_argument("--journal", help="append every recorded tag to this file")
    parser.add_argument("--mode", default="threading", choices=["threading", "eventlet"])
    args = parser.parse_args()

    cfg.CONF(["--config-file", args.config_file])
    transport = oslo_messaging.get_rpc_transport(cfg.CONF)
    target = oslo_messaging.Target(topic=args.topic, server=args.server, exchange=args.exchange)
    server = oslo_messaging.get_rpc_server(
        transport, target, [TestEndpoint(args.server, args.journal)], executor=args.mode
    )
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    server.start()
    print("READY", flush=True)
    while not stopping:
        time.sleep(0.05)
    server.stop()
    server.wait()
    transport.cleanup()
    print("STOPPED", flush=True)


if __name__ == "__main__":
    main()
