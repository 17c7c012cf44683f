"""A notification listener process for the functional tests.

    python -m tests.functional.notify_listener_proc --config-file F --topic T
        [--pool P] [--batch-size N --batch-timeout S] [--requeue-first]
        [--delay SECONDS] [--mode threading|eventlet] [--workers N]

``--mode eventlet`` runs through ``python -m harness.green tests.functional.notify_listener_proc``,
monkey-patched before this module is imported.

Prints "READY", then one JSON line per notification its endpoint handled
(after handling, before the acknowledgement); stops on SIGTERM.
"""

import argparse
import json
import signal
import threading
import time
import warnings

import oslo_messaging
from oslo_config import cfg

_print_lock = threading.Lock()


def emit(**record) -> None:
    with _print_lock:
        print(json.dumps(record), flush=True)


class Endpoint:
    def __init__(self, requeue_first: bool, delay: float) -> None:
        self.requeue_first = requeue_first
        self.delay = delay
        self.seen: set = set()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        time.sleep(self.delay)
        if self.requeue_first and payload["n"] not in self.seen:
            self.seen.add(payload["n"])
            emit(requeued=payload["n"])
            return oslo_messaging.NotificationResult.REQUEUE
        emit(n=payload["n"], event_type=event_type, publisher=publisher_id, ctxt=ctxt)
        return oslo_messaging.NotificationResult.HANDLED


class BatchEndpoint:
    def info(self, messages):
        emit(batch=[m["payload"]["n"] for m in messages])


def main() -> None:
    warnings.simplefilter("ignore")  # library deprecation notices: noise here
    parser = argparse.ArgumentParser()
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--pool")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--batch-timeout", type=float)
    parser.add_argument("--requeue-first", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--mode", default="threading", choices=["threading", "eventlet"])
    parser.add_argument("--workers", type=int, help="executor threads (1: handle in order)")
    args = parser.parse_args()

    cfg.CONF(["--config-file", args.config_file])
    transport = oslo_messaging.get_notification_transport(cfg.CONF)
    targets = [oslo_messaging.Target(topic=args.topic)]
    if args.batch_size:
        listener = oslo_messaging.get_batch_notification_listener(
            transport,
            targets,
            [BatchEndpoint()],
            executor=args.mode,
            pool=args.pool,
            batch_size=args.batch_size,
            batch_timeout=args.batch_timeout,
        )
    else:
        endpoint = Endpoint(args.requeue_first, args.delay)
        listener = oslo_messaging.get_notification_listener(
            transport,
            targets,
            [endpoint],
            executor=args.mode,
            pool=args.pool,
            allow_requeue=True,
        )
    if args.workers:  # registered by the listener above
        cfg.CONF.set_override("executor_thread_pool_size", args.workers)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    listener.start()
    emit(ready=True)
    while not stopping:
        time.sleep(0.05)
    listener.stop()
    listener.wait()
    transport.cleanup()


if __name__ == "__main__":
    main()
