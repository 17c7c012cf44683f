"""ZmqDriver: the oslo.messaging driver registered as ``zmq``.

It wires the pieces together: a matchmaker chosen by the transport URL, and,
per process, one I/O loop with the sockets it owns (``Engine``). The engine
is built on first use and rebuilt after ``fork()``, because neither ZeroMQ
contexts nor threads survive a fork.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import os
import socket
import threading
import uuid

import zmq
from oslo_messaging import exceptions
from oslo_messaging._drivers import base

from zmqdriver import addressing, matchmaker, metrics, options, protocol, security
from zmqdriver.backoff import Backoff, call_with_retry
from zmqdriver.discovery import Directory, Registrar
from zmqdriver.eventloop import IoLoop, runtime_for_process
from zmqdriver.eventloop.native import NativeRuntime
from zmqdriver.eventloop.pauses import PauseWatch, pause_threshold
from zmqdriver.exceptions import BackendError
from zmqdriver.matchmaker import MatchMaker
from zmqdriver.notify import notification_store_for
from zmqdriver.notify.listener import NotificationListener, encode_notification
from zmqdriver.notify.store import NotificationStore
from zmqdriver.reregister import hold_for
from zmqdriver.rpc.calls import Caller
from zmqdriver.rpc.casts import CastKeeper, CastLimits, start_thread
from zmqdriver.rpc.chooser import ServerChooser
from zmqdriver.rpc.client import RpcSender
from zmqdriver.rpc.lines import CallerLines
from zmqdriver.rpc.outbox import Heartbeats, Outbox
from zmqdriver.rpc.ping import ping_servers
from zmqdriver.rpc.server import BindSettings, Inbox, RpcListener, default_host
from zmqdriver.throttle import Throttle

LOG = logging.getLogger(__name__)

_LOOPBACK = "127.0.0.1"
_STORE_BACKOFF = Backoff(0.1, 10.0)  # pauses while the notification store is out


class Engine:
    """Everything a driver owns in one process: loop, sockets, registrations."""

    def __init__(
        self,
        zconf,
        *,
        matchmaker: MatchMaker,
        curve: security.CurveSettings | None,
        default_exchange: str | None,
        allowed_remote_exmods: list[str],
    ) -> None:
        """``zconf`` is the [oslo_messaging_zmq] group of the driver's conf."""
        self.pid = os.getpid()
        self.runtime = runtime_for_process()
        self.context = zmq.Context()
        self.context.max_sockets = _max_sockets(zconf.zmq_max_connections)
        self.linger_ms = zconf.zmq_linger * 1000 if zconf.zmq_linger >= 0 else -1
        pauses = PauseWatch(
            pause_threshold(
                zconf.rpc_ack_timeout_base,
                zconf.zmq_heartbeat_interval,
                zconf.zmq_heartbeat_timeout,
            )
        )
        self.loop = IoLoop(self.runtime, pauses=pauses)
        self.curve = curve
        self.zap: security.ZapHandler | None = None  # loop thread; bound by the first server
        # Green threads must not block their OS thread in zmq_poll, nor on a lock the
        # loop holds: there every send and call goes through the I/O loop.
        native = isinstance(self.runtime, NativeRuntime)
        self.outbox = Outbox(
            self.loop,
            self.context,
            linger_ms=self.linger_ms,
            heartbeats=Heartbeats(
                int(zconf.zmq_heartbeat_interval * 1000), int(zconf.zmq_heartbeat_timeout * 1000)
            ),
            curve=curve.keys if curve else None,
            max_connections=zconf.zmq_max_connections,
            direct_sends=native,
        )
        self.directory = Directory(
            matchmaker,
            zconf.zmq_target_cache_ttl,
            require_key=curve is not None,
            watch_prefix=f"{zconf.zmq_matchmaker_prefix}/rpc/"
            if zconf.zmq_matchmaker_watch
            else None,
            hold=hold_for(zconf.zmq_reregister_spread),
        )
        chooser = ServerChooser(self.directory, self.outbox.suspects)
        self.keeper = CastKeeper(
            outbox=self.outbox,
            chooser=chooser,
            limits=CastLimits(
                hold_time=zconf.zmq_cast_hold_time,
                hold_max=zconf.zmq_cast_hold_max,
                track_max=zconf.zmq_cast_track_max,
                window=zconf.zmq_cast_window,
                ack_timeout=zconf.rpc_ack_timeout_base,
            ),
            start_background=start_thread,
        )
        per_thread = zconf.zmq_caller_sockets if native else 0
        self.lines = CallerLines(self.outbox, per_thread)
        caller = Caller(
            outbox=self.outbox,
            chooser=chooser,
            ack_timeout=zconf.rpc_ack_timeout_base,
            allowed_remote_exmods=allowed_remote_exmods,
            lines=self.lines,
        )
        self.sender = RpcSender(
            caller=caller,
            keeper=self.keeper,
            chooser=chooser,
            key_prefix=zconf.zmq_matchmaker_prefix,
            default_exchange=default_exchange,
            codec=protocol.CODEC_BY_NAME[zconf.rpc_zmq_serialization],
        )
        self.registrar = Registrar(
            matchmaker,
            zconf.zmq_target_expire,
            zconf.zmq_target_update,
            generation_key=f"{zconf.zmq_matchmaker_prefix}/generation",
            spread=zconf.zmq_reregister_spread,
            on_lost=self.directory.records_lost,
            channel=self.directory,
        )
        self.listeners: list[RpcListener] = []

    def open_inbox(self, **inbox_args) -> Inbox:
        """Bind a server socket (loop thread), with ZAP in place first when CURVE is on."""
        if self.curve is not None and self.zap is None:
            # Before any CURVE server binds: without a ZAP handler libzmq
            # would let every client in.
            allowed = security.require_allowed_keys_dir(self.curve)
            self.zap = security.ZapHandler(self.loop, self.context, allowed)
        return Inbox(self.loop, self.context, linger_ms=self.linger_ms, **inbox_args)

    def close(self) -> None:
        self.keeper.close()
        for listener in self.listeners:
            listener.cleanup()
        self.registrar.stop()
        self.directory.close()
        self.lines.close()
        self.loop.call(self.outbox.close)
        self.loop.stop()
        self.runtime.close()
        self.context.term()


def resolve(host: str) -> list[str]:
    """The addresses ``host`` resolves to on this host (none if it does not resolve)."""
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
    except (OSError, UnicodeError):
        return []


# ZeroMQ sockets a context allows at least. A connection costs three (the DEALER and its
# monitor pair), and one with requests in flight is never closed, so a fanout to N servers
# holds 3 N sockets whatever zmq_max_connections says: with 1,792 (3 x 256 + 1024) a fanout
# to 1,000 hosts failed 13,010 sends with "Too many open files" (python -m bench.scale).
# 32,768 fits about 10,000 servers; libzmq keeps 12 bytes a socket: 0.4 MiB a context.
_MIN_SOCKETS = 32768
_MAX_SOCKETS = 65535  # libzmq's ZMQ_SOCKET_LIMIT


def _max_sockets(max_connections: int) -> int:
    """ZeroMQ sockets this process may need: three per server connection (the
    DEALER and its monitor pair) plus servers and spares, and never fewer than
    a fanout to every server of a large deployment needs at once."""
    if not max_connections:
        return _MAX_SOCKETS
    return min(max(3 * max_connections + 1024, _MIN_SOCKETS), _MAX_SOCKETS)


class ZmqDriver(base.BaseDriver):
    """Broker-less RPC over ZeroMQ with matchmaker discovery."""

    def __init__(self, conf, url, default_exchange=None, allowed_remote_exmods=None):
        options.register(conf)
        options.validate(conf)
        options.log_ignored(conf)
        super().__init__(conf, url, default_exchange, allowed_remote_exmods)
        # Keys are read and checked now, so a bad file fails the service at startup.
        self.curve = security.load_settings(conf)
        self.matchmaker = matchmaker.load(conf, url)
        self.embedded = matchmaker.name_from_url(url.transport or "zmq") == matchmaker.DEFAULT
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._store: NotificationStore | None = None
        self._trap_checked = Throttle(every=math.inf)

    def _get_engine(self) -> Engine:
        engine = self._engine
        if engine is not None and engine.pid == os.getpid():
            return engine
        with self._engine_lock:
            if self._engine is None or self._engine.pid != os.getpid():
                # After fork() the parent's engine is unusable and must not be
                # closed from here: just abandon it.
                self._engine = Engine(
                    self.conf[options.GROUP],
                    matchmaker=self.matchmaker,
                    curve=self.curve,
                    default_exchange=self._default_exchange,
                    allowed_remote_exmods=self._allowed_remote_exmods,
                )
            return self._engine

    # -- BaseDriver ----------------------------------------------------------------

    def send(
        self,
        target,
        ctxt,
        message,
        wait_for_reply=None,
        timeout=None,
        call_monitor_timeout=None,
        retry=None,
        transport_options=None,
    ):
        return self._get_engine().sender.send(
            target,
            ctxt,
            message,
            wait_for_reply=wait_for_reply,
            timeout=timeout,
            call_monitor_timeout=call_monitor_timeout,
            retry=retry,
            transport_options=transport_options,
        )

    def require_features(self, requeue=False):
        """Every feature is supported: notifications can be requeued."""

    def send_notification(self, target, ctxt, message, version, retry=None):
        zconf = self.conf[options.GROUP]
        exchange = addressing.target_exchange(target, self._default_exchange)
        stream = addressing.notification_stream(zconf.zmq_matchmaker_prefix, exchange, target.topic)
        payload = encode_notification(ctxt, message, version)
        store = self._notification_store()
        dropped = self._with_retry(retry, lambda: store.append(stream, payload))
        metrics.incr("notifications_appended")
        if dropped:
            metrics.incr("notifications_dropped", sum(dropped.values()))
        for group, count in dropped.items():
            LOG.warning(
                "Notification retention dropped %d unread notifications of %s for %s "
                "(zmq_notification_retention_count=%d, zmq_notification_retention_age=%s)",
                count,
                stream,
                group,
                zconf.zmq_notification_retention_count,
                zconf.zmq_notification_retention_age,
            )

    def listen(self, target, batch_size, batch_timeout):
        if self.curve is not None:
            security.require_allowed_keys_dir(self.curve)  # in the caller: a clear error
        engine = self._get_engine()
        zconf = self.conf[options.GROUP]
        exchange = addressing.target_exchange(target, self._default_exchange)
        settings = self._bind_settings()
        inbox = engine.loop.call(
            functools.partial(
                engine.open_inbox,
                settings=settings,
                topic=target.topic,
                exchange=exchange,
                dedup_window=zconf.zmq_dedup_window,
            )
        )
        prefix = zconf.zmq_matchmaker_prefix
        keys = [
            addressing.rpc_key(prefix, exchange, target.topic),
            addressing.rpc_key(prefix, exchange, target.topic, target.server),
        ]
        LOG.info(
            "RPC server for %s on exchange %r bound port %d on %s; clients will reach it at %s",
            addressing.describe_target(target),
            exchange,
            inbox.endpoint.port,
            settings.bind_address,
            inbox.endpoint,
        )
        self._warn_if_loopback_trap(settings)
        listener = RpcListener(
            engine.loop, inbox, engine.registrar, keys, batch_size, batch_timeout
        )
        engine.listeners.append(listener)
        return listener

    def listen_for_notifications(self, targets_and_priorities, pool, batch_size, batch_timeout):
        prefix = self.conf[options.GROUP].zmq_matchmaker_prefix
        streams = sorted(
            {
                addressing.notification_stream(
                    prefix,
                    addressing.target_exchange(target, self._default_exchange),
                    f"{target.topic}.{priority}",
                )
                for target, priority in targets_and_priorities
            }
        )
        consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        listener = NotificationListener(
            self._notification_store(), streams, addressing.notification_group(pool), consumer
        )
        return base.PollStyleListenerAdapter(listener, batch_size, batch_timeout)

    def ping(self, endpoints: list[addressing.Endpoint], timeout: float) -> dict:
        """Liveness round trips to servers, for zmqdriver-status (see rpc/ping.py)."""
        return ping_servers(self._get_engine().outbox, endpoints, timeout)

    def cleanup(self) -> None:
        with self._engine_lock:
            engine, self._engine = self._engine, None
        if engine is not None and engine.pid == os.getpid():
            engine.close()
        if self._store is not None:
            self._store.close()
        self.matchmaker.close()

    def notification_store(self) -> NotificationStore:
        """The store notifications of this driver use (zmqdriver-status lists it)."""
        return self._notification_store()

    # -- helpers -----------------------------------------------------------------------

    def _notification_store(self) -> NotificationStore:
        if self._store is None:
            self._store = notification_store_for(self.matchmaker, self.conf)
        return self._store

    @staticmethod
    def _with_retry(retry, operation):
        """Run ``operation``, retrying store outages ``retry`` times (None/-1: for ever)."""
        try:
            return call_with_retry(
                operation,
                retry_on=(BackendError,),
                backoff=_STORE_BACKOFF,
                retries=retry,
                on_retry=lambda exc, delay: LOG.warning(
                    "Storing a notification failed (%s); retrying in %.1fs", exc, delay
                ),
            )
        except BackendError as exc:
            raise exceptions.MessageDeliveryFailure(
                f"Notification not stored after {retry + 1} attempts: {exc}"
            ) from exc

    def _bind_settings(self) -> BindSettings:
        zconf = self.conf[options.GROUP]
        bind_address = zconf.rpc_zmq_bind_address or (_LOOPBACK if self.embedded else "*")
        return BindSettings(
            bind_address=bind_address,
            host=zconf.rpc_zmq_host or self._default_host(bind_address),
            min_port=zconf.rpc_zmq_min_port,
            max_port=zconf.rpc_zmq_max_port,
            retries=zconf.rpc_zmq_bind_port_retries,
            max_message_size=zconf.zmq_max_message_size,
            curve=self.curve.keys if self.curve else None,
        )

    def _warn_if_loopback_trap(self, settings: BindSettings) -> None:
        """Warn (once per process and address) when other hosts cannot reach what we publish."""
        if self._trap_checked.admit((settings.bind_address, settings.host)) is None:
            return
        why = addressing.loopback_trap(settings.bind_address, settings.host, resolve(settings.host))
        if why is not None:
            LOG.warning("%s", why)

    def _default_host(self, bind_address: str) -> str:
        if self.embedded:
            return _LOOPBACK
        try:
            address = ipaddress.ip_address(bind_address)
        except ValueError:
            return default_host()
        return default_host() if address.is_unspecified else bind_address
