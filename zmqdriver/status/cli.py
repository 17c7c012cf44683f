"""``zmqdriver-status``: registered servers, liveness, notification backlogs, an exporter.

    zmqdriver-status --config-file F targets [TARGET] [--json]
    zmqdriver-status --config-file F ping [TARGET] [--timeout S] [--json]
    zmqdriver-status --config-file F notifications [--json]
    zmqdriver-status --config-file F exporter --port P [--host H]

Exit status: 0 when every target shown has a live server, 1 when one has
none (named on stderr), 2 when the tool cannot look (configuration,
matchmaker or store errors).
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from oslo_config import cfg

# Before anything imports oslo.messaging: its import of eventlet prints a
# deprecation notice on every run that says nothing about the status.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from zmqdriver.status import model, render  # noqa: E402 - after the filter above

if TYPE_CHECKING:
    from zmqdriver.status.collect import StatusSource

EXIT_OK, EXIT_DEAD, EXIT_ERROR = 0, 1, 2
DEFAULT_TIMEOUT = 2.0


def _add_commands(subparsers) -> None:
    targets = subparsers.add_parser("targets", help="every target with its registered servers")
    targets.add_argument("target", nargs="?", help="topic, topic.server or exchange/topic")
    ping = subparsers.add_parser("ping", help="a liveness round trip to each server")
    ping.add_argument("target", nargs="?", help="topic, topic.server or exchange/topic")
    ping.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait")
    subparsers.add_parser("notifications", help="backlog of every notification stream and pool")
    exporter = subparsers.add_parser(
        "exporter", help="serve /metrics (Prometheus) and / (a status page) over HTTP"
    )
    exporter.add_argument("--port", type=int, required=True)
    exporter.add_argument("--host", default="127.0.0.1", help="address to listen on")
    exporter.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="PING timeout")
    for parser in (targets, ping, subparsers.choices["notifications"]):
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def parse_args(argv: list[str] | None) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    conf.register_cli_opt(cfg.SubCommandOpt("command", title="commands", handler=_add_commands))
    conf.register_cli_opt(cfg.BoolOpt("debug", default=False, help="log the driver's debug lines"))
    conf(argv, prog="zmqdriver-status", default_config_files=[])
    return conf


def main(argv: list[str] | None = None) -> int:
    conf = parse_args(sys.argv[1:] if argv is None else argv)
    # The driver's warnings (a refused connection to a dead server) are what
    # the output reports anyway; --debug shows them.
    logging.basicConfig(level=logging.DEBUG if conf.debug else logging.ERROR)
    from zmqdriver.status.collect import StatusSource  # the driver: only once args are valid

    try:
        source = StatusSource(conf)
    except Exception as exc:  # any configuration error of the driver or its matchmaker
        print(f"zmqdriver-status: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        return COMMANDS[conf.command.name](source, conf.command)
    finally:
        source.close()


def _targets(source: StatusSource, args) -> int:
    snapshot = source.look(targets=True)
    snapshot.targets = model.select(snapshot.targets, args.target)
    _emit(args, render.targets_json(snapshot), render.targets_text(snapshot))
    return _verdict(snapshot, args.target)


def _ping(source: StatusSource, args) -> int:
    snapshot = source.look(targets=True)
    snapshot.targets = model.select(snapshot.targets, args.target)
    source.ping(snapshot, args.timeout)
    _emit(args, render.targets_json(snapshot), render.ping_text(snapshot))
    return _verdict(snapshot, args.target)


def _notifications(source: StatusSource, args) -> int:
    snapshot = source.look(targets=False, backlogs=True)
    _emit(args, render.backlogs_json(snapshot), render.backlogs_text(snapshot))
    return _verdict(snapshot, None)


def _exporter(source: StatusSource, args) -> int:
    from zmqdriver.status import exporter  # prometheus_client only when serving

    exporter.serve(source, args.host, args.port, args.timeout)
    return EXIT_OK


def _emit(args, data: dict, text: str) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n" if args.json else text)


def _verdict(snapshot: model.Snapshot, spec: str | None) -> int:
    """The exit status, with the reason on stderr."""
    for problem in snapshot.problems:
        print(f"zmqdriver-status: {problem}", file=sys.stderr)
    if snapshot.problems:
        return EXIT_ERROR
    if spec and not snapshot.targets:
        print(f"zmqdriver-status: no server is registered for {spec!r}", file=sys.stderr)
        return EXIT_DEAD
    dead = model.dead_targets(snapshot.targets, snapshot.pings)
    for target in dead:
        print(f"zmqdriver-status: target {target.label} has no live server", file=sys.stderr)
    return EXIT_DEAD if dead else EXIT_OK


COMMANDS: dict[str, Callable[[StatusSource, object], int]] = {
    "targets": _targets,
    "ping": _ping,
    "notifications": _notifications,
    "exporter": _exporter,
}


if __name__ == "__main__":
    sys.exit(main())
