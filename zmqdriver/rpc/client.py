"""The client side of RPC: what ``BaseDriver.send`` does with a message.

``RpcSender.send`` encodes the message once and hands it to its owner: a
call to the ``Caller`` (which blocks until the reply), a cast or fanout to
the ``CastKeeper`` (which returns once the cast is sent or held, and sees
it through to the server's DONE).
"""

from __future__ import annotations

from oslo_messaging import Target, exceptions

from zmqdriver import addressing, protocol
from zmqdriver.addressing import describe_target
from zmqdriver.exceptions import BackendError
from zmqdriver.rpc.calls import Call, Caller
from zmqdriver.rpc.casts import Cast, CastKeeper
from zmqdriver.rpc.chooser import ServerChooser


class RpcSender:
    def __init__(
        self,
        *,
        caller: Caller,
        keeper: CastKeeper,
        chooser: ServerChooser,
        key_prefix: str,
        default_exchange: str | None,
        codec: protocol.Codec,
    ) -> None:
        self._caller = caller
        self._keeper = keeper
        self._chooser = chooser
        self._prefix = key_prefix
        self._default_exchange = default_exchange
        self._codec = codec

    def send(
        self,
        target: Target,
        ctxt,
        message: dict,
        wait_for_reply: bool | None = None,
        timeout: float | None = None,
        call_monitor_timeout: float | None = None,
        retry: int | None = None,
        transport_options=None,
    ):
        """``BaseDriver.send``: a call's result, or None once a cast is sent or held."""
        exchange = addressing.target_exchange(target, self._default_exchange)
        msg_id = protocol.new_msg_id()
        kind = protocol.Kind.CALL if wait_for_reply else protocol.Kind.CAST
        body = {
            "exchange": exchange,
            "topic": target.topic,
            "server": target.server,
            "fanout": bool(target.fanout),
            "ctxt": protocol.context_dict(ctxt),
            "message": message,
        }
        if not wait_for_reply:
            body[protocol.BATCHED_DONE] = True
        elif call_monitor_timeout:
            body["cm_timeout"] = call_monitor_timeout
        frames = [
            protocol.encode_header(kind, msg_id, self._codec),
            protocol.encode_body(body, self._codec),
        ]
        if target.fanout:
            key = addressing.rpc_key(self._prefix, exchange, target.topic)
            return self._keeper.fanout(Cast(target, key, msg_id, frames))
        key = addressing.rpc_key(self._prefix, exchange, target.topic, target.server)
        if getattr(transport_options, "at_least_once", False):
            self._check_deliverable(target, key, exchange, message)
        if not wait_for_reply:
            return self._keeper.cast(Cast(target, key, msg_id, frames, retry=retry))
        call = Call(
            target,
            key,
            msg_id,
            frames,
            timeout=timeout,
            retry=retry,
            monitor_timeout=call_monitor_timeout,
        )
        return self._caller.call(call)

    def _check_deliverable(self, target: Target, key: str, exchange: str, message: dict) -> None:
        """``at_least_once``: raise MessageUndeliverable now if no server is registered."""
        try:
            servers, error = self._chooser.registered(key), None
        except BackendError as exc:
            servers, error = [], exc
        if not servers:
            reason = exceptions.MessageDeliveryFailure(
                f"No server registered for {describe_target(target)}"
                + (f" (matchmaker: {error})" if error else "")
            )
            raise exceptions.MessageUndeliverable(reason, exchange, key, message)
