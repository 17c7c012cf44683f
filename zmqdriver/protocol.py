"""Wire format: versioned multipart frames.

Every message is ``[header, body]`` (a ROUTER socket adds the peer identity
in front). The header is fixed-size binary so a receiver can reject a frame
before decoding any payload:

    magic "ZD" | version (1 byte) | kind (1 byte) | codec (1 byte) | msg id (16 bytes)

The body is a dict encoded with the codec the header names (JSON or
msgpack), so processes configured with different serializations still
understand each other. Nothing is ever unpickled.
"""

from __future__ import annotations

import enum
import itertools
import json
import os
import struct
from dataclasses import dataclass
from typing import NamedTuple

from oslo_serialization import jsonutils, msgpackutils

MAGIC = b"ZD"
VERSION = 1
_HEADER = struct.Struct("!2sBBB16s")
HEADER_SIZE = _HEADER.size


class Kind(enum.IntEnum):
    CALL = 1  # request that expects a reply
    CAST = 2  # request without reply
    REPLY = 3  # result or failure of a CALL
    ACK = 4  # the server took the request; do not send it elsewhere
    HEARTBEAT = 5  # a CALL is still running (call_monitor_timeout)
    REJECT = 6  # the server is stopping; send the request elsewhere
    DONE = 7  # a CAST has run; the sender may forget it
    # Liveness, answered by the server's I/O loop itself (zmqdriver-status).
    # Servers older than these drop them as an unknown kind: no answer within
    # its timeout is how a client learns that, as for a dead server.
    PING = 8  # are you alive? (body: an empty map)
    PONG = 9  # yes: the server's state and counters (see zmqdriver.rpc.ping)


REQUEST_KINDS = frozenset({Kind.CALL, Kind.CAST})


class Codec(enum.IntEnum):
    JSON = 1
    MSGPACK = 2


CODEC_BY_NAME = {"json": Codec.JSON, "msgpack": Codec.MSGPACK}

# Wire values to members: a dict lookup costs far less than Kind(value) per message.
_KIND_BY_VALUE = {kind.value: kind for kind in Kind}
_CODEC_BY_VALUE = {codec.value: codec for codec in Codec}


class ProtocolError(ValueError):
    """A frame that does not follow the wire format; the message is dropped."""


@dataclass(frozen=True)
class Header:
    kind: Kind
    codec: Codec
    msg_id: bytes


# Message ids: a random prefix per process, then a counter. A uuid4 per message
# costs a getrandom() system call, about 5 us, on every cast and call.
_id_prefix = os.urandom(8)
_id_counter = itertools.count()


def _new_id_prefix() -> None:
    """A forked child must not repeat its parent's ids."""
    global _id_prefix, _id_counter
    _id_prefix, _id_counter = os.urandom(8), itertools.count()


os.register_at_fork(after_in_child=_new_id_prefix)


def new_msg_id() -> bytes:
    """16 bytes no other message of any process uses (the odds of two processes
    drawing the same 64-bit prefix are negligible).

    >>> first, second = new_msg_id(), new_msg_id()
    >>> len(first), first[:8] == second[:8], first != second
    (16, True, True)
    """
    return _id_prefix + next(_id_counter).to_bytes(8, "big")


def encode_header(kind: Kind, msg_id: bytes, codec: Codec = Codec.JSON) -> bytes:
    return _HEADER.pack(MAGIC, VERSION, kind, codec, msg_id)


def decode_header(frame: bytes) -> Header:
    """Validate and split a header frame; ProtocolError says what is wrong.

    >>> decode_header(encode_header(Kind.ACK, bytes(16))).kind.name
    'ACK'
    >>> decode_header(b"ZD" + bytes(19))
    Traceback (most recent call last):
    ...
    zmqdriver.protocol.ProtocolError: unknown protocol version 0 (this peer speaks 1)
    """
    if len(frame) != HEADER_SIZE:
        raise ProtocolError(f"header is {len(frame)} bytes, expected {HEADER_SIZE}")
    magic, version, kind, codec, msg_id = _HEADER.unpack(frame)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {magic!r}: not a zmqdriver peer")
    if version != VERSION:
        raise ProtocolError(f"unknown protocol version {version} (this peer speaks {VERSION})")
    known_kind, known_codec = _KIND_BY_VALUE.get(kind), _CODEC_BY_VALUE.get(codec)
    if known_kind is None or known_codec is None:
        raise ProtocolError(f"unknown message kind {kind} or codec {codec}")
    return Header(known_kind, known_codec, msg_id)


# A client that reads DONEs for several casts in one message says so in each
# cast's body; a server sends batched DONEs only to such clients, so older
# clients (which would read only the header's id) keep getting one per cast.
BATCHED_DONE = "batched_done"
MSG_ID_SIZE = 16


def more_done_ids(frame: bytes) -> list[bytes]:
    """The further cast ids a batched DONE's second frame carries (16 bytes each).

    >>> more_done_ids(bytes(16) + bytes([1]) * 16) == [bytes(16), bytes([1]) * 16]
    True
    >>> more_done_ids(bytes(17))
    Traceback (most recent call last):
    ...
    zmqdriver.protocol.ProtocolError: DONE ids frame is 17 bytes, not a multiple of 16
    """
    if len(frame) % MSG_ID_SIZE:
        raise ProtocolError(
            f"DONE ids frame is {len(frame)} bytes, not a multiple of {MSG_ID_SIZE}"
        )
    return [frame[i : i + MSG_ID_SIZE] for i in range(0, len(frame), MSG_ID_SIZE)]


class OwedDone(NamedTuple):
    """A DONE a server owes a client connection for one cast."""

    identity: bytes  # the connection's, as the ROUTER names it
    msg_id: bytes
    codec: Codec
    batched: bool  # the client reads DONEs of several casts in one message


def done_messages(owed: list[OwedDone]) -> list[list[bytes]]:
    """The messages (identity first) that send ``owed``: one per connection and codec
    for the ids of clients that read batches, in order; one per id for the others.

    >>> a, b = bytes(16), bytes([1]) * 16
    >>> msgs = done_messages([OwedDone(b"c1", a, Codec.JSON, True),
    ...                       OwedDone(b"c2", a, Codec.JSON, False),
    ...                       OwedDone(b"c1", b, Codec.JSON, True)])
    >>> [(m[0], decode_header(m[1]).msg_id == a, len(m)) for m in msgs]
    [(b'c1', True, 3), (b'c2', True, 2)]
    >>> more_done_ids(msgs[0][2]) == [b]
    True
    """
    batches: dict[tuple[bytes, Codec], list[bytes]] = {}
    singles = []
    for done in owed:
        if done.batched:
            batches.setdefault((done.identity, done.codec), []).append(done.msg_id)
        else:
            singles.append([done.identity, *encode_done([done.msg_id], done.codec)])
    batched = [
        [identity, *encode_done(msg_ids, codec)] for (identity, codec), msg_ids in batches.items()
    ]
    return batched + singles


def encode_done(msg_ids: list[bytes], codec: Codec = Codec.JSON) -> list[bytes]:
    """One DONE for ``msg_ids``: the first in the header, the rest in a second frame.

    >>> frames = encode_done([bytes(16), bytes([1]) * 16])
    >>> decode_header(frames[0]).msg_id == bytes(16), more_done_ids(frames[1]) == [bytes([1]) * 16]
    (True, True)
    >>> len(encode_done([bytes(16)]))
    1
    """
    header = encode_header(Kind.DONE, msg_ids[0], codec)
    return [header, b"".join(msg_ids[1:])] if len(msg_ids) > 1 else [header]


# What jsonutils.dump_as_bytes does (to_primitive turns datetimes and the like
# into JSON), with one encoder made once rather than one per message.
_JSON_ENCODER = json.JSONEncoder(default=jsonutils.to_primitive)


def json_text(value) -> str:
    """``value`` as JSON text, as jsonutils.dumps writes it.

    >>> import datetime
    >>> json_text({"at": datetime.datetime(2026, 1, 2, 3, 4, 5)})
    '{"at": "2026-01-02T03:04:05.000000"}'
    """
    return _JSON_ENCODER.encode(value)


def encode_body(body: dict, codec: Codec) -> bytes:
    if codec is Codec.MSGPACK:
        return msgpackutils.dumps(body)
    return json_text(body).encode()


def decode_body(frame: bytes, codec: Codec) -> dict:
    try:
        if codec is Codec.MSGPACK:
            body = msgpackutils.loads(frame)
        else:
            # Decoded here: json.loads of bytes first guesses their encoding in
            # Python (3.5 against 2.4 us for a typical request), and jsonutils.loads
            # decodes through encodeutils, slower still.
            body = json.loads(frame.decode())
    except Exception as exc:  # every decoder error means the same: drop it
        raise ProtocolError(f"body does not decode as {codec.name}: {exc}") from exc
    if not isinstance(body, dict):
        raise ProtocolError(f"body is a {type(body).__name__}, expected a map")
    return body


def context_dict(ctxt) -> dict:
    """A request context as a plain map: dicts pass, RequestContext-likes use to_dict()."""
    if ctxt is None:
        return {}
    if isinstance(ctxt, dict):
        return ctxt
    return ctxt.to_dict()


def msg_id_str(msg_id: bytes) -> str:
    """A printable message id, as oslo's IncomingMessage.msg_id: a UUID's text form.

    Built from hex directly (a quarter of ``str(uuid.UUID(bytes=...))``'s
    time): a server does this for every request.

    >>> msg_id_str(bytes(range(16)))
    '00010203-0405-0607-0809-0a0b0c0d0e0f'
    >>> import uuid; msg_id_str(bytes(range(16))) == str(uuid.UUID(bytes=bytes(range(16))))
    True
    """
    h = msg_id.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
