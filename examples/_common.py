"""Shared command-line setup of the examples: oslo.config, oslo.log and errors."""

from __future__ import annotations

import logging
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable

# Our dependencies announce eventlet's deprecation on import; the examples
# use threads, so that notice is only noise here.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
warnings.filterwarnings("ignore", category=DeprecationWarning)

import oslo_messaging  # noqa: E402
from oslo_config import cfg  # noqa: E402
from oslo_log import log  # noqa: E402

# What a wrong config file or transport URL raises: shown in one line, not as a
# traceback (--debug shows the traceback). A bad option value is a ValueError.
CONFIG_ERRORS = (cfg.Error, ValueError, oslo_messaging.MessagingException)

CLI_OPTS = [
    cfg.StrOpt("topic", default="demo", help="RPC topic."),
    cfg.StrOpt("server", default="server1", help="Name of the RPC server."),
]


def load_config(extra_opts: list[cfg.Opt], argv: list[str] | None = None) -> cfg.ConfigOpts:
    """Parse --config-file, oslo.log's options (--debug) and the example's own options."""
    conf = cfg.CONF
    conf.register_cli_opts(CLI_OPTS + extra_opts)
    log.register_options(conf)
    conf.set_default("use_stderr", True)  # stdout is the example's own output
    conf(sys.argv[1:] if argv is None else argv, project="zmqdriver-examples")
    log.setup(conf, "zmqdriver-examples")
    if not conf.debug:
        logging.getLogger().setLevel(logging.WARNING)  # oslo.log's default is INFO
    return conf


def _debug() -> bool:
    try:
        return bool(cfg.CONF.debug)
    except cfg.Error:  # the config never loaded: go by the command line
        return bool({"--debug", "-d"} & set(sys.argv[1:]))


def run(main: Callable[[], None]) -> None:
    """Run an example's ``main``; a configuration error ends it with one line, status 1."""
    try:
        main()
    except CONFIG_ERRORS as exc:
        if _debug():
            raise
        name = sys.argv[0].rsplit("/", 1)[-1]
        message = " ".join(str(exc).split()) or type(exc).__name__
        # oslo.config names the file as "LocationInfo(location=..., detail='FILE')".
        message = re.sub(r"LocationInfo\(location=<[^>]*>, detail='([^']*)'\)", r"\1", message)
        print(f"{name}: error: {message} (--debug shows the traceback)", file=sys.stderr)
        sys.exit(1)


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
