"""The driver's config file, as every process of a test or benchmark deployment reads it."""

from __future__ import annotations


def write_config(path: str, url: str | None = None, **zmq_options: object) -> str:
    """Write a config file at ``path`` and return ``path``.

    ``url`` becomes ``[DEFAULT] transport_url`` (left out when None); ``zmq_options`` go to
    ``[oslo_messaging_zmq]``, one ``name = value`` line each.
    """
    lines = ["[DEFAULT]", f"transport_url = {url}", ""] if url is not None else []
    lines.append("[oslo_messaging_zmq]")
    lines += [f"{name} = {value}" for name, value in zmq_options.items()]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path
