"""The config file of every oslo process of a benchmark run: loopback only, private matchmaker."""

from __future__ import annotations

import os

from oslo_config import cfg

from harness.config import write_config
from harness.net import LOOPBACK


def loopback_config(directory: str, name: str = "bench.conf", **zmq_options: object) -> str:
    """Write ``name`` in ``directory``: loopback only, the matchmaker file in ``directory``.

    ``zmq_options`` add lines to its [oslo_messaging_zmq] section.
    """
    return write_config(
        os.path.join(directory, name),
        rpc_zmq_bind_address=LOOPBACK,
        rpc_zmq_host=LOOPBACK,
        zmq_matchmaker_path=os.path.join(directory, "matchmaker.sqlite"),
        **zmq_options,
    )


def parse_config(config_file: str) -> None:
    """(Re)parse this process's ``cfg.CONF`` from ``config_file`` alone."""
    cfg.CONF(["--config-file", config_file], project="zmqdriver-bench", default_config_files=[])
