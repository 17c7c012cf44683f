"""Every exception zmqdriver raises on purpose, in one hierarchy.

Callers of oslo.messaging see oslo's own exceptions (``MessagingTimeout``,
``MessageDeliveryFailure``, ...) or these subclasses of them, so code that
handles a RabbitMQ transport handles this one too.
"""

from __future__ import annotations

from oslo_config import cfg
from oslo_messaging import exceptions


class BackendError(exceptions.MessagingException):
    """A backend (Redis, Sentinel, the embedded SQLite file) is misconfigured or refused us.

    Retrying does not help: wrong credentials, an untrusted certificate, an
    unknown service name, a malformed URL.
    """


class BackendUnavailable(BackendError):
    """A backend cannot be reached right now; retrying later may succeed."""


class ListingNotSupported(BackendError):
    """A matchmaker or notification store cannot list what it holds (for operators' tools)."""


class ServerLost(exceptions.MessagingTimeout):
    """The server that accepted a call went away before replying.

    A MessagingTimeout, so callers that handle timeouts handle this too, but
    raised as soon as the connection is known lost instead of at the timeout.
    """


class KeyRefused(exceptions.MessageDeliveryFailure):
    """A server refused this client's CURVE key at the handshake.

    Final for the request: resending, or waiting, cannot succeed until an
    operator adds the client's public key to the server's
    zmq_curve_allowed_keys_dir, so the caller learns it at once instead of at
    its timeout.
    """


class CurveConfigError(cfg.Error):
    """A CURVE option names a missing, unreadable or malformed file or directory."""
