"""Secret files given in the options: where they are named, and who may read them.

Both CURVE (``security``) and TLS to Redis (``backends.redis_tls``) read
private keys from files; this small module lets them warn alike without the
TLS code importing ZeroMQ.
"""

from __future__ import annotations

import logging
import os
import stat

from zmqdriver.options import GROUP

LOG = logging.getLogger(__name__)


def where(option: str, path: str) -> str:
    """How an error names a file option: ``[group] option = path``.

    >>> where("zmq_redis_tls_key_file", "/etc/zmq/client.key")
    '[oslo_messaging_zmq] zmq_redis_tls_key_file = /etc/zmq/client.key'
    """
    return f"[{GROUP}] {option} = {path}"


def warn_if_exposed(path: str, option: str) -> None:
    """Log a warning if the secret at ``path`` is accessible to group or others."""
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        LOG.warning(
            "%s is accessible to other users (mode %04o): anyone who reads it can impersonate "
            "this process; chmod 600 it",
            where(option, path),
            stat.S_IMODE(mode),
        )
