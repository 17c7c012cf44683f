"""Secret files given in the options: where they are named, and who may read them.

CURVE (``security``) and TLS to Redis and etcd (``backends``) read private
keys from files; this small module lets them check and warn alike without the
TLS code importing ZeroMQ.
"""

from __future__ import annotations

import logging
import os
import ssl
import stat

from zmqdriver.exceptions import BackendError
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


def check_tls_files(prefix: str, ca: str | None, cert: str | None, key: str | None) -> None:
    """Load a client's TLS files into a throwaway context; BackendError names the option.

    ``prefix`` names the options: ``{prefix}_ca_file``, ``_cert_file`` and ``_key_file``.
    """
    if bool(cert) != bool(key):
        raise BackendError(
            f"[{GROUP}] {prefix}_cert_file and {prefix}_key_file go together: "
            "set both (a client certificate and its key) or neither"
        )
    for suffix, path in (("ca", ca), ("cert", cert), ("key", key)):
        if path and not os.path.isfile(path):
            raise BackendError(f"{where(f'{prefix}_{suffix}_file', path)}: no such file")
    if key:
        warn_if_exposed(key, f"{prefix}_key_file")
    context = ssl.create_default_context()
    failing = where(f"{prefix}_ca_file", ca or "")
    try:
        if ca:
            context.load_verify_locations(cafile=ca)
        failing = f"{where(f'{prefix}_cert_file', cert or '')}, {prefix}_key_file = {key}"
        if cert:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise BackendError(f"{failing}: not usable for TLS: {exc}") from exc
