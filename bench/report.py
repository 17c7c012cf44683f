"""What a benchmark prints besides its numbers: the machine it ran on, aligned tables."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """An aligned Markdown table (it reads as plain text too): the first column left-aligned,
    the others right-aligned.

    >>> print(markdown(["metric", "value"], [["a", "1"], ["bb", "22"]]))
    | metric | value |
    |--------|------:|
    | a      |     1 |
    | bb     |    22 |
    """
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2) for i, w in enumerate(widths))
    return "\n".join([line(header), rule + "|", *(line(row) for row in rows)])


def _first_line(command: list[str]) -> str:
    """The first line ``command`` prints, or "" if it cannot run or prints nothing."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return next(iter(done.stdout.strip().splitlines()), "")


def load_average() -> str:
    """This machine's 1-minute load average: other work running next to the benchmark."""
    return f"{os.getloadavg()[0]:.2f}"


def zmqdriver_revision() -> str:
    """The git commit the driver code comes from, and whether it has local changes."""
    commit = _first_line(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]) or "unknown"
    changed = _first_line(["git", "-C", REPO, "status", "--porcelain", "--", "zmqdriver"])
    return f"commit {commit}" + (" + uncommitted changes" if changed else "")


def machine_facts(selected: list[str]) -> dict[str, str]:
    """Versions of everything measured; ``selected`` columns add their servers' versions."""
    import zmq

    facts = {
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "oslo.messaging": metadata.version("oslo.messaging"),
        "zmqdriver": f"{metadata.version('zmqdriver')} ({zmqdriver_revision()})",
        "pyzmq": f"{zmq.pyzmq_version()} (libzmq {zmq.zmq_version()})",
        "kombu": metadata.version("kombu"),
    }
    if "zmq+redis" in selected:
        version = _first_line(["redis-server", "--version"])  # "Redis server v=7.0.15 ..."
        facts["redis-server"] = version.split("v=")[-1].split()[0] if "v=" in version else "?"
    if "rabbit" in selected:
        facts["rabbitmq"] = _first_line(["rabbitmqctl", "version"]) or "?"
    return facts
