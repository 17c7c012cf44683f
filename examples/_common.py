"""Shared command-line setup of the examples: oslo.config and logging."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import warnings

# Our dependencies announce eventlet's deprecation on import; the examples
# use threads, so that notice is only noise here.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
warnings.filterwarnings("ignore", category=DeprecationWarning)

from oslo_config import cfg  # noqa: E402

CLI_OPTS = [
    cfg.StrOpt("topic", default="demo", help="RPC topic."),
    cfg.StrOpt("server", default="server1", help="Name of the RPC server."),
]


def load_config(extra_opts: list[cfg.Opt], argv: list[str] | None = None) -> cfg.ConfigOpts:
    """Parse --config-file and the example's own options into cfg.CONF."""
    conf = cfg.CONF
    conf.register_cli_opts(CLI_OPTS + extra_opts)
    conf(sys.argv[1:] if argv is None else argv, project="zmqdriver-examples")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return conf


def serve_until_stopped(server, transport, run_for: float | None, ready_message: str = "") -> None:
    """Start an oslo server, run until SIGTERM/SIGINT (or ``run_for`` seconds), stop cleanly."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    if ready_message:
        print(ready_message, flush=True)
    stop.wait(run_for)
    server.stop()
    server.wait()
    transport.cleanup()
