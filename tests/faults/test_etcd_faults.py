"""Faults of the etcd matchmaker: etcd down then back (with and without its data), and a
server SIGKILLed (its records go when its lease runs out, all at once).

As in test_faults.py, servers run in their own processes, casts and calls flow from this
process, and the servers' journals count what ran.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from harness.config import write_config
from harness.wait import wait_until
from tests.faults.load import Load, survive_matchmaker_outage
from tests.functional.conftest import Deployment
from tests.functional.helpers import client, unique
from tests.support import parse
from zmqdriver import addressing
from zmqdriver.matchmaker.etcd import EtcdMatchMaker

pytest.importorskip("etcd3gw")


@pytest.mark.parametrize("comes_back", ["with its data", "empty"])
def test_etcd_outage_and_restart_under_load(etcd_deployment, etcd_server, tmp_path, comes_back):
    load = Load(etcd_deployment, unique("faults"), tmp_path)

    def bring_back() -> None:
        if comes_back == "empty":
            etcd_server.wipe()  # a member lost and replaced: no keys, no leases
        etcd_server.start()  # the lease check notices an empty etcd within seconds

    survive_matchmaker_outage(load, etcd_server.stop, bring_back, "etcd")


EXPIRE = 3  # zmq_target_expire of the SIGKILL case: the lease's TTL


def test_a_sigkilled_servers_records_vanish_when_its_lease_runs_out(etcd_url, tmp_path):
    prefix = unique("lease")
    config_file = write_config(
        str(tmp_path / "zmq.conf"),
        etcd_url,
        zmq_matchmaker_prefix=prefix,
        zmq_target_expire=EXPIRE,
        zmq_target_update=1,
    )
    deployment = Deployment("etcd", etcd_url, config_file, str(tmp_path))
    conf = deployment.conf()
    reader = EtcdMatchMaker(conf, parse(conf, etcd_url))
    topic = unique("victims")
    topic_key = addressing.rpc_key(prefix, addressing.DEFAULT_EXCHANGE, topic)
    victim, survivor = deployment.server(topic, "victim"), deployment.server(topic, "survivor")
    try:
        wait_until(lambda: len(reader.lookup(topic_key)) == 2, what="both servers registered")
        server_key = addressing.rpc_key(prefix, addressing.DEFAULT_EXCHANGE, topic, "victim")
        assert len(reader.lookup(server_key)) == 1
        os.kill(victim.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(
            lambda: len(reader.lookup(topic_key)) == 1 and not reader.lookup(server_key),
            timeout=EXPIRE + 10,
            poll=0.05,
            what="the victim's records to vanish",
        )
        gone_after = time.monotonic() - killed
        # Its lease ran out: at most its TTL (plus etcd's lease check), not the next refresh
        # of anyone, and both of its records went together.
        assert gone_after < EXPIRE + 3, gone_after
        transport = deployment.transport()
        try:
            caller = client(transport, topic, timeout=10)
            assert {caller.call({}, "whoami") for _ in range(4)} == {"survivor"}
        finally:
            transport.cleanup()
    finally:
        reader.close()
        victim.kill()
        survivor.stop()
