"""zmqdriver: a broker-less ZeroMQ transport driver for oslo.messaging."""

from importlib import metadata


def _version() -> str:
    # From the installed distribution's metadata, so it always matches the
    # package; a plain checkout on PYTHONPATH without metadata says so.
    try:
        return metadata.version("zmqdriver")
    except metadata.PackageNotFoundError:
        return "unknown"


__version__ = _version()
