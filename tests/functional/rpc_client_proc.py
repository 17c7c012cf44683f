"""An RPC client process running under eventlet, for the functional tests.

    python -m harness.green tests.functional.rpc_client_proc --config-file F --topic T

Exercises call, concurrent green calls, cast and fanout against servers s1 and
s2 of topic T, prints "OK" on success and exits non-zero otherwise.
"""

import argparse
import warnings

import eventlet
import oslo_messaging
from oslo_config import cfg


def main() -> None:
    warnings.simplefilter("ignore")  # library deprecation notices: noise here
    parser = argparse.ArgumentParser()
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--exchange")
    args = parser.parse_args()
    cfg.CONF(["--config-file", args.config_file])
    transport = oslo_messaging.get_rpc_transport(cfg.CONF)

    def client(**kwargs):
        target = oslo_messaging.Target(topic=args.topic, exchange=args.exchange, **kwargs)
        return oslo_messaging.get_rpc_client(transport, target, timeout=30)

    anyone = client()
    assert anyone.call({}, "echo", value="green") == "green"
    pool = eventlet.GreenPool(20)
    values = list(range(200))
    results = list(pool.imap(lambda v: anyone.call({}, "echo", value=v), values))
    assert results == values, results
    s1 = client(server="s1")
    for i in range(5):
        s1.cast({}, "record", tag=f"green-cast-{i}")
    assert s1.call({}, "recorded", prefix="green-cast-") == [f"green-cast-{i}" for i in range(5)]
    # Calls from one green thread again and again: a native thread would open a
    # line of its own by now, and a green thread must not block in zmq_poll.
    assert transport._driver._get_engine().lines.count() == 0, "an eventlet process opened lines"
    client(fanout=True).cast({}, "record", tag="green-fanout")
    for name in ("s1", "s2"):
        server = client(server=name)
        deadline = eventlet.Timeout(30)
        try:
            while not server.call({}, "recorded", prefix="green-fanout"):
                eventlet.sleep(0.05)
        finally:
            deadline.cancel()
    transport.cleanup()
    print("OK", flush=True)


if __name__ == "__main__":
    main()
