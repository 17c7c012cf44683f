"""CURVE security: key pairs, the settings read from the options, the ZAP handler.

With ``zmq_curve_enabled`` every ZeroMQ connection is encrypted (CURVE) and
servers authenticate clients through ZAP (RFC 27): libzmq asks whoever is
bound at ``inproc://zeromq.zap.01`` on the socket's context whether a
client's public key may connect. We answer from the I/O loop: pyzmq's
``Authenticator`` is the I/O-free decision engine, our loop owns its socket,
so no extra thread runs (pyzmq's ThreadAuthenticator would block the hub
under eventlet) and the ZAP socket obeys the one-owner-per-socket rule.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from dataclasses import dataclass, field

import zmq
import zmq.auth
from oslo_config import cfg
from zmq.auth.base import VERSION as ZAP_VERSION
from zmq.auth.base import Authenticator
from zmq.utils import z85

from zmqdriver.addressing import is_z85_key
from zmqdriver.eventloop import IoLoop
from zmqdriver.eventloop.runtime import Runtime
from zmqdriver.exceptions import CurveConfigError
from zmqdriver.keyfiles import warn_if_exposed
from zmqdriver.keyfiles import where as _where
from zmqdriver.options import GROUP
from zmqdriver.throttle import Throttle

LOG = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"

# The allowed-keys directory is looked at again on a handshake at most this
# often (seconds): a new key works within this long, and a flood of
# handshakes cannot turn into a flood of directory scans.
RELOAD_EVERY = 2.0

# Seconds between two log lines about refused clients (with a count).
_LOG_REFUSALS_EVERY = 10.0


__all__ = ["CurveConfigError", "warn_if_exposed"]  # their old home, for callers


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair, both halves Z85-encoded (40 characters)."""

    public: str
    secret: str = field(repr=False)  # never in logs or tracebacks


@dataclass(frozen=True)
class CurveSettings:
    """What CURVE needs at run time, read and checked once at startup."""

    keys: KeyPair
    allowed_keys_dir: str | None  # absolute; None in processes that only send


def load_key_pair(path: str, option: str = "zmq_curve_secret_key_file") -> KeyPair:
    """Read a '.key_secret' file; CurveConfigError names ``option`` and the problem."""
    where = _where(option, path)
    if not os.path.exists(path):
        raise CurveConfigError(f"{where}: the file does not exist")
    if not os.path.isfile(path):
        raise CurveConfigError(f"{where}: not a regular file")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise CurveConfigError(f"{where}: cannot read a CURVE key pair: {exc}") from exc
    if secret is None:
        raise CurveConfigError(
            f"{where}: the file has a public key only; give the '.key_secret' file of the pair"
        )
    pair = KeyPair(public.decode("latin-1"), secret.decode("latin-1"))
    if not (is_z85_key(pair.public) and is_z85_key(pair.secret)):
        raise CurveConfigError(f"{where}: the keys are not 40-character Z85 strings")
    if zmq.curve_public(secret) != public:
        raise CurveConfigError(f"{where}: the public key does not belong to the secret key")
    warn_if_exposed(path, option)
    return pair


def check_allowed_keys_dir(path: str, option: str = "zmq_curve_allowed_keys_dir") -> int:
    """Check that ``path`` is a readable directory of public keys; returns how many."""
    where = _where(option, path)
    if not os.path.exists(path):
        raise CurveConfigError(f"{where}: the directory does not exist")
    if not os.path.isdir(path):
        raise CurveConfigError(f"{where}: not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        # glob() would silently find nothing and every client would be refused.
        raise CurveConfigError(f"{where}: the directory is not readable")
    try:
        keys = zmq.auth.load_certificates(path)
    except (OSError, ValueError) as exc:
        raise CurveConfigError(f"{where}: {exc}") from exc
    if not keys:
        LOG.warning("%s holds no '.key' file: every client is refused until one is added", where)
    return len(keys)


def load_settings(conf: cfg.ConfigOpts) -> CurveSettings | None:
    """The CURVE settings of ``conf``, checked; None when CURVE is off."""
    zconf = conf[GROUP]
    if not zconf.zmq_curve_enabled:
        if zconf.zmq_curve_secret_key_file or zconf.zmq_curve_allowed_keys_dir:
            LOG.warning(
                "[%s] CURVE key options are set but zmq_curve_enabled is false: ZeroMQ "
                "connections are neither encrypted nor authenticated",
                GROUP,
            )
        return None
    keys = load_key_pair(zconf.zmq_curve_secret_key_file)
    allowed = zconf.zmq_curve_allowed_keys_dir
    if allowed:
        # Absolute, so a later chdir cannot change it, and never "*", which
        # pyzmq's Authenticator reads as "allow any key".
        allowed = os.path.abspath(allowed)
        check_allowed_keys_dir(allowed)
    return CurveSettings(keys, allowed or None)


def require_allowed_keys_dir(settings: CurveSettings) -> str:
    """The allowed-keys directory, which a process running RPC servers must have."""
    if settings.allowed_keys_dir is None:
        raise CurveConfigError(
            f"[{GROUP}] zmq_curve_enabled is true but zmq_curve_allowed_keys_dir is not set: "
            "RPC servers need the directory of the public keys of the clients they accept"
        )
    return settings.allowed_keys_dir


# -- ZAP ------------------------------------------------------------------------------


class _LoopLog:
    """What pyzmq's Authenticator logs through: safe from the loop thread.

    Its lines go through the runtime (no green locks from a native thread);
    its per-handshake debug lines are dropped, ours say what matters.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def debug(self, msg: str, *args) -> None:
        pass

    def info(self, msg: str, *args) -> None:
        self._runtime.log(logging.INFO, "zmqdriver ZAP: " + msg, *args)

    def warning(self, msg: str, *args) -> None:
        self._runtime.log(logging.WARNING, "zmqdriver ZAP: " + msg, *args)

    def error(self, msg: str, *args) -> None:
        self._runtime.log(logging.ERROR, "zmqdriver ZAP: " + msg, *args)


class _LoopAuthenticator(Authenticator):
    """pyzmq's ZAP decisions, replying through our ROUTER socket.

    ``_send_zap_reply`` is the engine's one output: overriding it lets us put
    the ROUTER envelope in front and see the verdict, for the refusal log.
    """

    def __init__(self, context: zmq.Context, socket: zmq.Socket, log: _LoopLog) -> None:
        super().__init__(context, log=log)
        self.zap_socket = socket
        self.envelope: list[bytes] = []
        self.verdict: tuple[bytes, bytes] | None = None

    def _send_zap_reply(
        self,
        request_id: bytes,
        status_code: bytes,
        status_text: bytes,
        user_id: str = "anonymous",
    ) -> None:
        self.verdict = (status_code, status_text)
        user = user_id.encode("utf-8", "replace") if status_code == b"200" else b""
        reply = [ZAP_VERSION, request_id, status_code, status_text, user, b""]
        self.zap_socket.send_multipart(self.envelope + reply, zmq.NOBLOCK)


def _run_to_end(result) -> None:
    """Finish pyzmq's ``handle_zap_message`` without an asyncio loop.

    It is a coroutine (pyzmq >= 25) that only awaits credential callbacks,
    which we do not use, so it never suspends: one ``send`` runs it to the end.
    """
    if not inspect.iscoroutine(result):
        return
    try:
        result.send(None)
    except StopIteration:
        return
    result.close()
    raise RuntimeError("the ZAP handler unexpectedly suspended")


def _dir_signature(path: str) -> tuple:
    """Changes whenever a '.key' file is added, removed, replaced or edited."""
    try:
        entries = sorted(
            (entry.name, entry.inode(), entry.stat().st_mtime_ns, entry.stat().st_size)
            for entry in os.scandir(path)
            if entry.name.endswith(".key")
        )
        return (os.stat(path).st_mtime_ns, tuple(entries))
    except OSError as exc:
        return ("unreadable", str(exc))


class ZapHandler:
    """Answers libzmq's ZAP requests for the CURVE servers of one zmq.Context.

    Created, used and closed in the I/O loop thread. It must be bound before
    any CURVE server socket of the context binds: libzmq lets every client in
    when nobody answers at the ZAP endpoint.

    Reloading: on a handshake, at most every RELOAD_EVERY seconds, the
    directory's listing (names, inodes, mtimes, sizes) is compared with the
    last one and the keys are read again if it changed. A handshake is the
    only moment the keys matter, so an idle server does no work, and a
    refused client (which retries) gets in within RELOAD_EVERY of its key
    being added. A directory that cannot be read keeps the last keys read.
    """

    def __init__(self, loop: IoLoop, context: zmq.Context, allowed_keys_dir: str) -> None:
        self._loop = loop
        self._dir = allowed_keys_dir
        self._socket = context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(ZAP_ENDPOINT)
        self._auth = _LoopAuthenticator(context, self._socket, _LoopLog(loop.runtime))
        self._signature: tuple | None = None
        self._next_check = 0.0
        # A refused client retries, and hostile ones may flood: one line per period.
        self._refusals = Throttle(every=_LOG_REFUSALS_EVERY)
        self._reload_if_changed()
        loop.add_reader(self._socket, self._on_request)

    @property
    def allowed_keys(self) -> int:
        return len(self._auth.certs.get("*", {}))

    def close(self) -> None:
        if not self._socket.closed:
            self._loop.remove_reader(self._socket)
            self._socket.close()

    def _reload_if_changed(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + RELOAD_EVERY
        signature = _dir_signature(self._dir)
        if signature == self._signature:
            return
        # Remembered even if loading fails: a broken file is reported once,
        # and read again when the directory changes (when someone fixes it).
        self._signature = signature
        before = self._auth.certs.get("*")
        self._auth.configure_curve(domain="*", location=self._dir)
        if self._auth.certs.get("*") is not before:
            self._loop.runtime.log(
                logging.INFO,
                "zmqdriver: %d allowed CURVE client keys loaded from %s",
                self.allowed_keys,
                self._dir,
            )

    def _on_request(self, frames: list[bytes]) -> None:
        # [routing id, empty delimiter, ZAP request...]; only libzmq talks here.
        if b"" not in frames:
            return
        cut = frames.index(b"") + 1
        request = frames[cut:]
        self._reload_if_changed()
        self._auth.envelope = frames[:cut]
        self._auth.verdict = None
        _run_to_end(self._auth.handle_zap_message(request))
        verdict = self._auth.verdict
        if verdict is not None and verdict[0] != b"200":
            self._note_refusal(request, verdict[1])

    def _note_refusal(self, request: list[bytes], reason: bytes) -> None:
        suppressed = self._refusals.admit()
        if suppressed is None:
            return
        address = request[3].decode("utf-8", "replace") if len(request) > 3 else "?"
        key = z85.encode(request[6]).decode() if len(request) > 6 and len(request[6]) == 32 else "?"
        self._loop.runtime.log(
            logging.WARNING,
            "zmqdriver: refused %d client connection(s) since the last report; latest from %s "
            "with CURVE key %s (%s). Clients are accepted when their public key file is in "
            "zmq_curve_allowed_keys_dir = %s",
            suppressed + 1,
            address,
            key,
            reason.decode("utf-8", "replace"),
            self._dir,
        )
