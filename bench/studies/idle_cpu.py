"""Idle CPU of a server process and of a client process (no busy polling).

    python -m bench.studies.idle_cpu [--url zmq://] [--seconds 10]

Starts an RPC server and a notification listener in one process and a client
process that made one call and then idles; samples both processes' CPU time
over ``--seconds`` with psutil and prints it as a percentage of one core.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import psutil

SERVER = textwrap.dedent(
    """
    import sys, time, warnings
    warnings.simplefilter("ignore")
    import oslo_messaging as om
    from oslo_config import cfg
    cfg.CONF([])
    url, topic = sys.argv[1], sys.argv[2]
    class Echo:
        def echo(self, ctxt, value):
            return value
        def info(self, ctxt, publisher_id, event_type, payload, metadata):
            pass
    rpc = om.get_rpc_transport(cfg.CONF, url=url)
    server = om.get_rpc_server(rpc, om.Target(topic=topic, server="idle"), [Echo()])
    notify = om.get_notification_transport(cfg.CONF, url=url)
    listener = om.get_notification_listener(notify, [om.Target(topic=topic)], [Echo()])
    server.start()
    listener.start()
    print("READY", flush=True)
    time.sleep(3600)
    """
)

CLIENT = textwrap.dedent(
    """
    import sys, time, warnings
    warnings.simplefilter("ignore")
    import oslo_messaging as om
    from oslo_config import cfg
    cfg.CONF([])
    url, topic = sys.argv[1], sys.argv[2]
    rpc = om.get_rpc_transport(cfg.CONF, url=url)
    assert om.get_rpc_client(rpc, om.Target(topic=topic), timeout=30).call({}, "echo", value=1) == 1
    print("READY", flush=True)
    time.sleep(3600)
    """
)


def _start(program: str, url: str, topic: str, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", program, url, topic], stdout=subprocess.PIPE, text=True, env=env
    )
    if proc.stdout.readline().strip() != "READY":
        proc.kill()
        raise RuntimeError("child did not start")
    return proc


def _cpu_percent(procs: list[subprocess.Popen], seconds: float) -> list[float]:
    handles = [psutil.Process(p.pid) for p in procs]
    before = [sum(h.cpu_times()[:2]) for h in handles]
    time.sleep(seconds)
    after = [sum(h.cpu_times()[:2]) for h in handles]
    return [100.0 * (a - b) / seconds for a, b in zip(after, before)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="zmq://")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    topic = f"idle-{os.getpid()}"
    with tempfile.TemporaryDirectory() as runtime:
        os.chmod(runtime, 0o700)
        env = dict(os.environ, XDG_RUNTIME_DIR=runtime)
        procs = []
        try:
            procs.append(_start(SERVER, args.url, topic, env))
            procs.append(_start(CLIENT, args.url, topic, env))
            time.sleep(2)  # let start-up work settle before sampling
            server, client = _cpu_percent(procs, args.seconds)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
    print(
        f"idle CPU over {args.seconds:.0f} s ({args.url}): server + listener {server:.2f} %, "
        f"client {client:.2f} % of one core"
    )


if __name__ == "__main__":
    main()
