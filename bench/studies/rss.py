"""Memory of a client that knows many servers, with and without a connection limit.

    python -m bench.studies.rss [--servers 1000] [--processes 4] [--limits 0,256,100]

Starts ``--servers`` RPC servers on one topic (spread over ``--processes``
processes, each with its own name) on ``zmq://`` with a private matchmaker
file, then, for each limit, a fresh client process that makes one directed
call to every server and reports its resident memory (psutil), open file
descriptors and open server connections. ``zmq_max_connections = 0`` is no
limit; 256 is the default.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

from bench.procs import stop_pid
from harness.config import write_config

MIB = 1024 * 1024

SERVERS = textwrap.dedent(
    """
    import sys, threading, warnings
    warnings.simplefilter("ignore")
    import oslo_messaging as om
    from oslo_config import cfg
    config, topic, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    cfg.CONF(["--config-file", config])
    class Echo:
        def echo(self, ctxt, value):
            return value
    transport = om.get_rpc_transport(cfg.CONF)
    servers = [
        om.get_rpc_server(transport, om.Target(topic=topic, server=f"s{i}"), [Echo()])
        for i in range(first, first + count)
    ]
    for server in servers:
        server.start()
    print("READY", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    for server in servers:
        server.stop()
    transport.cleanup()
    """
)

CLIENT = textwrap.dedent(
    """
    import json, os, sys, warnings
    warnings.simplefilter("ignore")
    import resource
    import psutil
    import oslo_messaging as om
    # About three descriptors per server connection (TCP, socket, monitor):
    # the usual soft limit of 1024 would end the unlimited run near 340 servers.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    from oslo_config import cfg
    config, topic, servers, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    cfg.CONF(["--config-file", config])
    from zmqdriver import options
    options.register(cfg.CONF)
    cfg.CONF.set_override("zmq_max_connections", int(limit), group="oslo_messaging_zmq")
    transport = om.get_rpc_transport(cfg.CONF)
    me = psutil.Process()
    def call(i):
        target = om.Target(topic=topic, server=f"s{i}")
        assert om.get_rpc_client(transport, target, timeout=60).call({}, "echo", value=i) == i
    call(0)
    before = me.memory_info().rss
    for i in range(servers):
        call(i)
    engine = transport._driver._get_engine()
    print(json.dumps({
        "rss_one": before, "rss_all": me.memory_info().rss, "fds": me.num_fds(),
        "connections": engine.loop.call(lambda: len(engine.outbox._dealers)),
    }), flush=True)
    transport.cleanup()
    """
)


def _start_servers(config: str, topic: str, servers: int, processes: int) -> list:
    per_process = -(-servers // processes)
    children = []
    for first in range(0, servers, per_process):
        count = min(per_process, servers - first)
        args = [sys.executable, "-c", SERVERS, config, topic, str(first), str(count)]
        child = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        children.append(child)
    for child in children:
        if child.stdout.readline().strip() != "READY":
            raise RuntimeError("a server process did not start")
    return children


def _measure(config: str, topic: str, servers: int, limit: int) -> dict:
    args = [sys.executable, "-c", CLIENT, config, topic, str(servers), str(limit)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if out.returncode:
        raise RuntimeError(f"client with limit {limit} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--limits", default="0,256,100")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(
            os.path.join(tmp, "zmq.conf"),
            "zmq://",
            zmq_matchmaker_path=os.path.join(tmp, "matchmaker.sqlite"),
        )
        children = _start_servers(config, "rss", args.servers, args.processes)
        try:
            print(
                f"| zmq_max_connections | RSS, 1 server | RSS, {args.servers} servers "
                "| growth | open connections | open fds |"
            )
            print("|---:|---:|---:|---:|---:|---:|")
            for limit in (int(x) for x in args.limits.split(",")):
                m = _measure(config, "rss", args.servers, limit)
                one, every = m["rss_one"] / MIB, m["rss_all"] / MIB
                print(
                    f"| {limit or 'no limit'} | {one:.1f} MiB | {every:.1f} MiB "
                    f"| {every - one:.1f} MiB | {m['connections']} | {m['fds']} |",
                    flush=True,
                )
        finally:
            for child in children:
                child.stdin.close()
                stop_pid(child, "rpc servers")


if __name__ == "__main__":
    main()
