"""Configuration options, group ``[oslo_messaging_zmq]``.

Names of the old in-tree ZeroMQ driver keep their meaning where it still
makes sense, so an old deployment's config file loads. Old options we do not
implement are still registered (so their values parse) and are logged once
as ignored when set.
"""

from __future__ import annotations

import logging

from oslo_config import cfg

LOG = logging.getLogger(__name__)

GROUP = "oslo_messaging_zmq"

zmq_opts = [
    cfg.StrOpt(
        "rpc_zmq_bind_address",
        deprecated_group="DEFAULT",
        help="Address the RPC servers of this process bind to: an IP address or '*' for all "
        "interfaces. Default: 127.0.0.1 with the embedded matchmaker (zmq://), '*' with "
        "a network matchmaker (zmq+redis://).",
    ),
    cfg.StrOpt(
        "rpc_zmq_host",
        deprecated_group="DEFAULT",
        sample_default="<hostname>",
        help="Host name or IP address other processes use to reach this one; it is what "
        "servers publish in the matchmaker. Default: 127.0.0.1 with the embedded "
        "matchmaker, otherwise the IP the bind address names, or this machine's host name.",
    ),
    cfg.PortOpt(
        "rpc_zmq_min_port",
        deprecated_group="DEFAULT",
        default=49153,
        help="Lowest port a server may bind.",
    ),
    cfg.IntOpt(
        "rpc_zmq_max_port",
        deprecated_group="DEFAULT",
        min=1,
        max=65536,
        default=65536,
        help="Highest port a server may bind, exclusive.",
    ),
    cfg.IntOpt(
        "rpc_zmq_bind_port_retries",
        deprecated_group="DEFAULT",
        min=1,
        default=100,
        help="How many random ports of the range to try before a server fails to bind.",
    ),
    cfg.IntOpt(
        "zmq_target_expire",
        deprecated_group="DEFAULT",
        min=-1,
        default=60,
        help="Seconds a server's matchmaker record stays valid without a refresh. A server "
        "that dies without unregistering is dropped from lookups after this long. A value "
        "below 1 means records never expire (they are removed only when servers stop).",
    ),
    cfg.IntOpt(
        "zmq_target_update",
        deprecated_group="DEFAULT",
        min=1,
        default=20,
        help="Seconds between refreshes of a running server's matchmaker records. Must be "
        "smaller than zmq_target_expire.",
    ),
    cfg.FloatOpt(
        "zmq_reregister_spread",
        min=0.0,
        default=2.0,
        help="When the matchmaker lost its records (Redis restarted empty or flushed, etcd "
        "lost a lease), each process waits a random delay below this many seconds before "
        "registering its servers again, so that the hosts come back at about hosts / spread "
        "per second instead of all at once (a stampede: ~15 Redis commands per host). "
        "Meanwhile clients keep sending to the servers they knew, for this long plus 4 s. "
        "At 100 hosts 2 s cut the peak from 3,451 to 1,571 Redis commands/s (every host back "
        "after 2.6 s instead of 1.1 s); for thousands of hosts allow about 1 s per 1,000 "
        "hosts (doc/scaling.md). 0 registers again at once.",
    ),
    cfg.FloatOpt(
        "zmq_target_cache_ttl",
        min=0.0,
        default=1.0,
        help="Seconds a client caches a matchmaker lookup; a new server is seen by clients "
        "within about this long (at once with a matchmaker that pushes changes, see "
        "zmq_matchmaker_watch).",
    ),
    cfg.StrOpt(
        "rpc_zmq_serialization",
        deprecated_group="DEFAULT",
        default="json",
        choices=("json", "msgpack"),
        help="Encoding of the message bodies this process sends. Receivers decode whatever "
        "the message header names, so processes with different settings interoperate. "
        "msgpack is a few percent faster; json (the default) delivers arguments as the other "
        "oslo.messaging drivers do (bytes arrive as text; with msgpack they stay bytes).",
    ),
    cfg.IntOpt(
        "zmq_linger",
        deprecated_group="DEFAULT",
        deprecated_name="rpc_cast_timeout",
        default=1,
        min=-1,
        help="Seconds to keep trying to send pending messages when a socket closes; "
        "-1 waits forever, 0 discards them at once.",
    ),
    cfg.FloatOpt(
        "rpc_ack_timeout_base",
        default=5.0,
        min=0.05,
        help="Seconds a sender waits for a server to acknowledge receipt of a cast or call "
        "before it resends the message to another server of the target.",
    ),
    cfg.FloatOpt(
        "zmq_heartbeat_interval",
        default=1.0,
        min=0.0,
        help="Seconds between ZeroMQ heartbeats on each client connection; 0 disables them. "
        "A server that stops answering them is treated as lost: calls waiting on it fail at "
        "once and new requests go to other servers.",
    ),
    cfg.FloatOpt(
        "zmq_heartbeat_timeout",
        default=3.0,
        min=0.1,
        help="Seconds without any traffic or heartbeat answer after which a server's "
        "connection is considered lost.",
    ),
    cfg.FloatOpt(
        "zmq_cast_hold_time",
        default=300.0,
        min=0.0,
        help="Seconds a cast to a target without any server is held by the sender, waiting "
        "for one to register. Casts still waiting then are dropped and logged with a count.",
    ),
    cfg.IntOpt(
        "zmq_cast_hold_max",
        default=10000,
        min=0,
        help="Most casts a process holds while their targets have no server; a cast beyond "
        "that fails with MessageDeliveryFailure.",
    ),
    cfg.IntOpt(
        "zmq_cast_track_max",
        default=10000,
        min=1,
        help="Most casts a process has on their way at once (sent, and watched until their "
        "server reports them done, to resend them elsewhere if that server is lost first); "
        "cast() waits for room beyond that.",
    ),
    cfg.IntOpt(
        "zmq_max_connections",
        default=256,
        min=0,
        help="Most connections to servers a process keeps open; beyond that the least "
        "recently used idle one is closed (and opened again when needed). Each costs memory, "
        "a file descriptor and heartbeats. 0 means no limit.",
    ),
    cfg.IntOpt(
        "zmq_caller_sockets",
        default=4,
        min=0,
        help="Connections of its own that each thread making calls may keep, one per server "
        "it calls again within 10 s: a call that is the process's only one under way is sent "
        "and its reply read by the calling thread itself, without two hand-overs to the "
        "driver's I/O thread (its latency about 0.1 ms lower here); first calls, calls made "
        "while others are under way and calls to further servers go through the process's "
        "shared connections. "
        "Each costs a TCP connection, two file descriptors and heartbeats, on top of "
        "zmq_max_connections. 0: every call goes through the shared connections (always so "
        "under eventlet).",
    ),
    cfg.IntOpt(
        "zmq_cast_window",
        default=16,
        min=1,
        help="Most casts a process has on their way to one server at once (sent and not yet "
        "reported done); cast() waits for room beyond that. Larger windows pipeline more "
        "casts; a server killed mid-stream can have run at most this many casts whose "
        "completion the sender never heard of, and which it sends elsewhere again.",
    ),
    cfg.StrOpt(
        "zmq_matchmaker_path",
        help="File of the embedded matchmaker (zmq://). Every process that should see the "
        "others must use the same file. Default: zmqdriver/matchmaker.sqlite under "
        "$XDG_RUNTIME_DIR, or under /tmp/zmqdriver-<uid> when that is not set.",
    ),
    cfg.StrOpt(
        "zmq_matchmaker_prefix",
        default="zmqdriver",
        help="Prefix of every matchmaker key, so several clouds can share one Redis or etcd.",
    ),
    cfg.FloatOpt(
        "zmq_matchmaker_timeout",
        default=5.0,
        min=0.1,
        help="Seconds a single request to the matchmaker backend (Redis, etcd) may take.",
    ),
    cfg.BoolOpt(
        "zmq_matchmaker_watch",
        default=True,
        help="Have the matchmaker push changes to clients where it can (zmq+etcd://: an etcd "
        "watch; zmq+redis:// and zmq+sentinel://: a subscription to the channel "
        "<zmq_matchmaker_prefix>/changes, which registrations publish to): a new server gets "
        "requests, and a stopped or expired one stops getting them, as soon as the matchmaker "
        "knows, and lookups are cached until their key changes (on Redis, or until their "
        "first record expires). While the watch is down, and with matchmakers that cannot "
        "push, clients poll as zmq_target_cache_ttl says.",
    ),
    cfg.IntOpt(
        "zmq_notification_retention_count",
        default=100000,
        min=1,
        help="Most notifications kept per topic and priority for listeners that have not "
        "read them yet (and for pools that start later). Older ones are dropped, and the "
        "sender logs how many each pool lost. Enforced every count/16-th notification or once "
        "a second, so a topic may run over by up to a sixteenth.",
    ),
    cfg.FloatOpt(
        "zmq_notification_retention_age",
        default=86400.0,
        min=1.0,
        help="Seconds a notification is kept at most; older ones are dropped as above.",
    ),
    cfg.FloatOpt(
        "zmq_notification_redelivery",
        default=30.0,
        min=0.1,
        help="Seconds a notification delivered to a listener may stay unacknowledged before "
        "it is delivered to another listener of the same pool (the first one is presumed "
        "dead). Requeued notifications are delivered again within about a second.",
    ),
    cfg.IntOpt(
        "zmq_max_message_size",
        default=64 * 1024 * 1024,
        min=-1,
        help="Largest message in bytes a server accepts (libzmq's MAXMSGSIZE); a peer sending "
        "a larger one is disconnected. -1 means no limit.",
    ),
    cfg.IntOpt(
        "zmq_dedup_window",
        default=100000,
        min=0,
        help="How many recent message ids each server remembers to drop duplicates.",
    ),
    cfg.BoolOpt(
        "zmq_curve_enabled",
        default=False,
        help="Encrypt and authenticate every ZeroMQ connection of this process (RPC requests, "
        "replies and acknowledgements) with CURVE. Servers accept only clients whose public key "
        "is in zmq_curve_allowed_keys_dir and publish their own public key in the matchmaker; "
        "clients only talk to servers whose record carries a key. All processes of a "
        "deployment must agree: a client without CURVE cannot talk to a server with it, nor the "
        "reverse. Notifications do not travel over ZeroMQ (they go through the matchmaker's "
        "store) and are not covered. See doc/security.md.",
    ),
    cfg.StrOpt(
        "zmq_curve_secret_key_file",
        help="This process's CURVE key pair: a '.key_secret' file as written by "
        "'zmqdriver-keys create' (or zmq.auth.create_certificates), which holds both the public "
        "and the secret key. Required with zmq_curve_enabled, for clients and servers alike. "
        "Keep it readable by the service's user only (mode 0600).",
    ),
    cfg.StrOpt(
        "zmq_curve_allowed_keys_dir",
        help="Directory of the public key files ('.key') of the clients this process's RPC "
        "servers accept. Required with zmq_curve_enabled in processes that run RPC servers. "
        "Keys added or removed take effect without a restart: the directory is checked again "
        "when a client connects, at most every 2 seconds. A removed key refuses new "
        "connections; a connection already made stays up until it closes.",
    ),
    cfg.BoolOpt(
        "zmq_redis_tls_enabled",
        default=False,
        help="Talk to the Redis matchmaker over TLS, verifying the server's certificate: every "
        "connection to Redis (zmq+redis://), and with zmq+sentinel:// to the sentinels and to "
        "the master they name alike. ?tls=true or ?tls=false in the transport URL overrides "
        "this for that URL. Notifications live in the same Redis and are covered too.",
    ),
    cfg.StrOpt(
        "zmq_redis_tls_ca_file",
        help="PEM file of the CA certificate(s) that signed the Redis servers' certificates. "
        "Default: the system's trusted CAs.",
    ),
    cfg.StrOpt(
        "zmq_redis_tls_cert_file",
        help="PEM client certificate this process shows Redis, for servers that require one "
        "(tls-auth-clients yes). Set together with zmq_redis_tls_key_file.",
    ),
    cfg.StrOpt(
        "zmq_redis_tls_key_file",
        help="Unencrypted PEM private key of zmq_redis_tls_cert_file. Keep it readable by the "
        "service's user only (mode 0600).",
    ),
    cfg.BoolOpt(
        "zmq_redis_tls_check_hostname",
        default=True,
        help="Require the Redis server's certificate to name the host the driver connects to: "
        "the host of the transport URL, or with zmq+sentinel:// the address the sentinels give "
        "for the master (usually an IP address, which the certificate must then list).",
    ),
    cfg.BoolOpt(
        "zmq_etcd_tls_enabled",
        default=False,
        help="Talk to the etcd matchmaker (zmq+etcd://) over TLS (HTTPS), verifying the "
        "members' certificates and that they name the host of the transport URL. ?tls=true or "
        "?tls=false in the transport URL overrides this for that URL.",
    ),
    cfg.StrOpt(
        "zmq_etcd_tls_ca_file",
        help="PEM file of the CA certificate(s) that signed the etcd members' certificates "
        "(etcd's --trusted-ca-file on the client side). Default: the system's trusted CAs.",
    ),
    cfg.StrOpt(
        "zmq_etcd_tls_cert_file",
        help="PEM client certificate this process shows etcd, for members started with "
        "--client-cert-auth. Set together with zmq_etcd_tls_key_file.",
    ),
    cfg.StrOpt(
        "zmq_etcd_tls_key_file",
        help="Unencrypted PEM private key of zmq_etcd_tls_cert_file. Keep it readable by the "
        "service's user only (mode 0600).",
    ),
]

# Options of the old in-tree driver that have no meaning here. They stay
# registered so old config files load; a value set for one is logged once.
# Marked deprecated for removal, so the generated sample says so too.
IGNORED_REASON = (
    "An option of the old in-tree ZeroMQ driver that zmqdriver ignores; it is accepted "
    "only so that old config files still load. Remove it from your config file."
)


def _ignored(opt_class: type[cfg.Opt], name: str, note: str = "Ignored.", **kwargs) -> cfg.Opt:
    return opt_class(
        name,
        help=note,
        deprecated_for_removal=True,
        deprecated_reason=IGNORED_REASON,
        **kwargs,
    )


legacy_ignored_opts = [
    _ignored(
        cfg.StrOpt,
        "rpc_zmq_matchmaker",
        "Ignored: the matchmaker comes from transport_url.",
        deprecated_group="DEFAULT",
    ),
    _ignored(cfg.IntOpt, "rpc_zmq_contexts", deprecated_group="DEFAULT"),
    _ignored(cfg.IntOpt, "rpc_zmq_topic_backlog", deprecated_group="DEFAULT"),
    _ignored(
        cfg.StrOpt,
        "rpc_zmq_ipc_dir",
        "Ignored: no IPC sockets are used.",
        deprecated_group="DEFAULT",
    ),
    _ignored(cfg.IntOpt, "rpc_poll_timeout", deprecated_group="DEFAULT"),
    _ignored(
        cfg.BoolOpt,
        "use_pub_sub",
        "Ignored: fanout is sent peer to peer.",
        deprecated_group="DEFAULT",
    ),
    _ignored(
        cfg.BoolOpt, "use_router_proxy", "Ignored: there is no proxy.", deprecated_group="DEFAULT"
    ),
    _ignored(cfg.BoolOpt, "use_dynamic_connections"),
    _ignored(cfg.IntOpt, "zmq_failover_connections"),
    _ignored(cfg.BoolOpt, "zmq_immediate"),
    _ignored(cfg.IntOpt, "zmq_tcp_keepalive"),
    _ignored(cfg.IntOpt, "zmq_tcp_keepalive_idle"),
    _ignored(cfg.IntOpt, "zmq_tcp_keepalive_cnt"),
    _ignored(cfg.IntOpt, "zmq_tcp_keepalive_intvl"),
    _ignored(cfg.IntOpt, "rpc_thread_pool_size", "Ignored: see executor_thread_pool_size."),
    _ignored(cfg.IntOpt, "rpc_message_ttl"),
    _ignored(cfg.BoolOpt, "rpc_use_acks", "Ignored: acknowledgements are always on."),
    _ignored(cfg.IntOpt, "rpc_ack_timeout_multiplier"),
    _ignored(cfg.IntOpt, "rpc_retry_attempts", "Ignored: see the retry argument of the client."),
    _ignored(cfg.ListOpt, "subscribe_on"),
]

_warned_ignored: set[str] = set()


def register(conf: cfg.ConfigOpts) -> None:
    """Register our options on ``conf`` and validate their combination."""
    group = cfg.OptGroup(name=GROUP, title="ZeroMQ driver options")
    conf.register_group(group)
    conf.register_opts(zmq_opts, group=group)
    conf.register_opts(legacy_ignored_opts, group=group)


def validate(conf: cfg.ConfigOpts) -> None:
    """Reject option combinations that cannot work, naming the options."""
    zconf = conf[GROUP]
    if zconf.rpc_zmq_min_port >= zconf.rpc_zmq_max_port:
        raise cfg.Error(
            f"[{GROUP}] rpc_zmq_min_port ({zconf.rpc_zmq_min_port}) must be lower than "
            f"rpc_zmq_max_port ({zconf.rpc_zmq_max_port})"
        )
    if 0 < zconf.zmq_target_expire <= zconf.zmq_target_update:
        raise cfg.Error(
            f"[{GROUP}] zmq_target_update ({zconf.zmq_target_update}) must be smaller than "
            f"zmq_target_expire ({zconf.zmq_target_expire}), or records expire between refreshes"
        )
    if zconf.zmq_curve_enabled and not zconf.zmq_curve_secret_key_file:
        raise cfg.Error(
            f"[{GROUP}] zmq_curve_enabled is true but zmq_curve_secret_key_file is not set: "
            "every process needs a key pair (create one with 'zmqdriver-keys create DIR NAME')"
        )


def log_ignored(conf: cfg.ConfigOpts) -> None:
    """Log, once per process and option, each legacy option that is set."""
    zconf = conf[GROUP]
    for opt in legacy_ignored_opts:
        if opt.name in _warned_ignored or zconf[opt.name] is None:
            continue
        _warned_ignored.add(opt.name)
        LOG.warning("[%s] %s = %r is ignored by zmqdriver", GROUP, opt.name, zconf[opt.name])


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Entry point for oslo-config-generator (namespace ``zmqdriver``)."""
    return [(GROUP, zmq_opts + legacy_ignored_opts)]
