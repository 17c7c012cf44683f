"""TLS to Redis: redis-py's connection arguments from the options and the URL.

TLS is on when ``[oslo_messaging_zmq] zmq_redis_tls_enabled`` is true, or
when the transport URL says ``?tls=true`` (``?tls=false`` turns it off for
that URL whatever the option says). The files are read once, when the
connection is made, so a missing or malformed one stops the service at
startup with an error naming the option; redis-py reads them again for each
connection it opens.

Also here: what a failed connection says about TLS, for error messages that
name the cause (an untrusted certificate, a server that wants TLS or a
client certificate) instead of looking like an outage.
"""

from __future__ import annotations

import ssl

from oslo_utils import strutils
from redis import exceptions as redis_exc

from zmqdriver.exceptions import BackendError
from zmqdriver.keyfiles import check_tls_files
from zmqdriver.options import GROUP

QUERY_OPTION = "tls"

_FILE_OPTIONS = ("zmq_redis_tls_ca_file", "zmq_redis_tls_cert_file", "zmq_redis_tls_key_file")


def url_flag(query: dict[str, str], kind: str = "Redis") -> bool | None:
    """``?tls=`` of a ``kind`` transport URL: True, False, or None when absent.

    >>> url_flag({"tls": "true"}), url_flag({}), url_flag({"tls": "0"})
    (True, None, False)
    """
    text = query.get(QUERY_OPTION)
    if text is None:
        return None
    try:
        return strutils.bool_from_string(text, strict=True)
    except ValueError as exc:
        raise BackendError(
            f"Invalid ?{QUERY_OPTION}={text} in the {kind} transport URL: expected true or false"
        ) from exc


def connection_kwargs(conf, query: dict[str, str]) -> dict[str, object]:
    """redis-py arguments for TLS (empty when TLS is off); checks the files first."""
    zconf = conf[GROUP]
    flag = url_flag(query)
    enabled = zconf.zmq_redis_tls_enabled if flag is None else flag
    files = {name: zconf[name] for name in _FILE_OPTIONS if zconf[name]}
    if not enabled:
        if files and flag is None:
            raise BackendError(
                f"[{GROUP}] {', '.join(files)} set but TLS to Redis is off: set "
                f"zmq_redis_tls_enabled = true (or ?{QUERY_OPTION}=true in the transport URL)"
            )
        return {}
    check_tls_files(
        "zmq_redis_tls",
        zconf.zmq_redis_tls_ca_file,
        zconf.zmq_redis_tls_cert_file,
        zconf.zmq_redis_tls_key_file,
    )
    return {
        "ssl": True,
        "ssl_cert_reqs": "required",
        "ssl_ca_certs": zconf.zmq_redis_tls_ca_file,
        "ssl_certfile": zconf.zmq_redis_tls_cert_file,
        "ssl_keyfile": zconf.zmq_redis_tls_key_file,
        "ssl_check_hostname": zconf.zmq_redis_tls_check_hostname,
    }


def _ssl_cause(exc: BaseException) -> BaseException | None:
    """The ssl or socket error behind a redis-py ConnectionError, if any."""
    cause = exc.__cause__ or exc.__context__
    return cause if isinstance(cause, OSError) else None


def rejected_certificate(exc: redis_exc.RedisError) -> str | None:
    """Why the client refused the server's certificate, or None if it did not."""
    cause = _ssl_cause(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return cause.verify_message or str(cause)
    return None


def certificate_fix(reason: str) -> str:
    """What to change when the server's certificate was refused for ``reason``."""
    if "mismatch" in reason:
        return (
            "the certificate must name the host the driver connects to "
            "(or set zmq_redis_tls_check_hostname = false)"
        )
    return "zmq_redis_tls_ca_file must name the CA that signed it"


def failure_hint(exc: BaseException, tls: bool) -> str:
    """A hint to append to an "unreachable" message when the failure smells of TLS."""
    cause = _ssl_cause(exc)
    if tls and isinstance(cause, ssl.SSLError):
        return (
            "; the server ended the TLS session: if it requires a client certificate "
            "(tls-auth-clients), check zmq_redis_tls_cert_file and zmq_redis_tls_key_file"
        )
    if not tls and isinstance(cause, ConnectionResetError | ConnectionAbortedError):
        return (
            "; the server dropped the connection as soon as it was opened: if it accepts TLS "
            f"only, set zmq_redis_tls_enabled (or ?{QUERY_OPTION}=true in the transport URL)"
        )
    return ""
