"""Wire format: the fixed binary header and the codec-encoded body."""

from __future__ import annotations

import os
import struct
import uuid

import pytest

from zmqdriver import protocol
from zmqdriver.protocol import (
    HEADER_SIZE,
    Codec,
    Header,
    Kind,
    ProtocolError,
    decode_body,
    decode_header,
    encode_body,
    encode_header,
    new_msg_id,
)

MSG_ID = bytes(range(16))


def _raw_header(magic=b"ZD", version=protocol.VERSION, kind=Kind.CALL, codec=Codec.JSON):
    return struct.pack("!2sBBB16s", magic, version, kind, codec, MSG_ID)


# -- header ----------------------------------------------------------------------


@pytest.mark.parametrize("codec", list(Codec))
@pytest.mark.parametrize("kind", list(Kind))
def test_header_round_trip(kind, codec):
    frame = encode_header(kind, MSG_ID, codec)
    assert len(frame) == HEADER_SIZE
    header = decode_header(frame)
    assert header == Header(kind, codec, MSG_ID)
    assert header.kind is kind
    assert header.codec is codec


def test_header_layout_is_fixed():
    frame = encode_header(Kind.REPLY, MSG_ID, Codec.MSGPACK)
    assert HEADER_SIZE == 21
    assert frame == b"ZD" + bytes([1, 3, 2]) + MSG_ID


def test_header_codec_defaults_to_json():
    assert decode_header(encode_header(Kind.CAST, MSG_ID)).codec is Codec.JSON


def test_request_kinds():
    assert protocol.REQUEST_KINDS == {Kind.CALL, Kind.CAST}


@pytest.mark.parametrize("size", [0, 1, HEADER_SIZE - 1, HEADER_SIZE + 1, 100])
def test_decode_header_rejects_wrong_length(size):
    with pytest.raises(ProtocolError, match=f"header is {size} bytes, expected {HEADER_SIZE}"):
        decode_header(b"Z" * size)


def test_decode_header_rejects_a_valid_header_with_trailing_bytes():
    with pytest.raises(ProtocolError, match="expected 21"):
        decode_header(encode_header(Kind.CALL, MSG_ID) + b"\0")


@pytest.mark.parametrize("magic", [b"ZE", b"zd", b"\0\0", b"DZ"])
def test_decode_header_rejects_bad_magic(magic):
    with pytest.raises(ProtocolError, match="bad magic"):
        decode_header(_raw_header(magic=magic))


@pytest.mark.parametrize("version", [0, 2, 255])
def test_decode_header_rejects_unknown_version_and_names_it(version):
    with pytest.raises(ProtocolError, match=f"unknown protocol version {version} ") as info:
        decode_header(_raw_header(version=version))
    assert f"speaks {protocol.VERSION}" in str(info.value)


@pytest.mark.parametrize("kind", [0, max(Kind) + 1, 255])
def test_decode_header_rejects_unknown_kind(kind):
    with pytest.raises(ProtocolError, match=f"unknown message kind {kind} "):
        decode_header(_raw_header(kind=kind))


@pytest.mark.parametrize("codec", [0, max(Codec) + 1, 255])
def test_decode_header_rejects_unknown_codec(codec):
    with pytest.raises(ProtocolError, match=f"codec {codec}$"):
        decode_header(_raw_header(codec=codec))


def test_protocol_error_is_a_value_error():
    # Callers that drop bad frames with ``except ValueError`` keep working.
    assert issubclass(ProtocolError, ValueError)


def test_codecs_by_config_name():
    assert protocol.CODEC_BY_NAME == {"json": Codec.JSON, "msgpack": Codec.MSGPACK}


# -- body ------------------------------------------------------------------------

BODIES = [
    {},
    {"method": "echo", "args": {"value": 1}},
    {
        "nested": {"list": [1, 2.5, None, True, False, "x"], "dict": {"a": {"b": {"c": []}}}},
        "unicode": "żółć — 日本語 🙂",
        "none": None,
        "float": 0.1,
        "negative": -12345678901,
        "big": 2**62,
        "empty": "",
        "list_of_dicts": [{"a": 1}, {"b": [None]}],
    },
]


@pytest.mark.parametrize("codec", list(Codec))
@pytest.mark.parametrize("body", BODIES)
def test_body_round_trip(body, codec):
    frame = encode_body(body, codec)
    assert isinstance(frame, bytes)
    assert decode_body(frame, codec) == body


def test_json_and_msgpack_bodies_differ_on_the_wire():
    body = BODIES[1]
    assert encode_body(body, Codec.JSON) != encode_body(body, Codec.MSGPACK)
    # Decoding with the codec the header names is what makes them interoperate.
    with pytest.raises(ProtocolError):
        decode_body(encode_body(body, Codec.MSGPACK), Codec.JSON)


@pytest.mark.parametrize("codec", list(Codec))
@pytest.mark.parametrize("frame", [b"\xff\xfe\x00garbage\xc1", b"", b"\xc1"])
def test_decode_body_rejects_garbage(frame, codec):
    with pytest.raises(ProtocolError, match=f"does not decode as {codec.name}"):
        decode_body(frame, codec)


@pytest.mark.parametrize("codec", list(Codec))
@pytest.mark.parametrize("value", [[1, 2, 3], "text", 7, None])
def test_decode_body_rejects_a_non_map(value, codec):
    frame = encode_body(value, codec)
    with pytest.raises(ProtocolError, match=f"body is a {type(value).__name__}, expected a map"):
        decode_body(frame, codec)


@pytest.mark.parametrize("codec", list(Codec))
def test_decode_body_rejects_every_truncation(codec):
    frame = encode_body(BODIES[2], codec)
    for end in range(len(frame)):
        with pytest.raises(ProtocolError):
            decode_body(frame[:end], codec)


@pytest.mark.parametrize(
    ("frame", "codec"),
    [
        (b"[" * 200_000, Codec.JSON),  # nesting deeper than the recursion limit
        (b'{"a":' * 200_000, Codec.JSON),
        (b"\x91" * 200_000 + b"\xc0", Codec.MSGPACK),  # nested one-element arrays
        (b"\x81\xa1a" * 200_000 + b"\xc0", Codec.MSGPACK),  # nested one-entry maps
        (b"\xdd\xff\xff\xff\xff", Codec.MSGPACK),  # array claiming 4G items
        (b"\xdf\xff\xff\xff\xff", Codec.MSGPACK),  # map claiming 4G entries
        (b"\xc6\xff\xff\xff\xff", Codec.MSGPACK),  # bin claiming 4GB
    ],
)
def test_decode_body_rejects_hostile_frames(frame, codec):
    with pytest.raises(ProtocolError):
        decode_body(frame, codec)


def test_decode_body_does_not_unpickle():
    import pickle

    frame = pickle.dumps({"a": 1})
    for codec in Codec:
        with pytest.raises(ProtocolError):
            decode_body(frame, codec)


# -- message ids -----------------------------------------------------------------


def test_msg_ids_are_16_unique_bytes():
    ids = [new_msg_id() for _ in range(1000)]
    assert all(isinstance(i, bytes) and len(i) == 16 for i in ids)
    assert len(set(ids)) == len(ids)


def test_msg_id_str_is_the_uuid_text():
    msg_id = new_msg_id()
    text = protocol.msg_id_str(msg_id)
    assert uuid.UUID(text).bytes == msg_id
    assert protocol.msg_id_str(MSG_ID) == "00010203-0405-0607-0809-0a0b0c0d0e0f"


# -- fuzzing: nothing but ProtocolError comes out of the decoders ----------------

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is an optional test dependency

    def test_fuzzing_needs_hypothesis():
        pytest.skip("hypothesis is not installed")

else:
    FUZZ = settings(
        max_examples=400,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    # Generating nested bodies is slower than random bytes: fewer examples.
    FUZZ_BODIES = settings(FUZZ, max_examples=100)

    @FUZZ
    @given(st.binary(max_size=64))
    def test_decode_header_fuzz(frame):
        try:
            header = decode_header(frame)
        except ProtocolError:
            return
        assert isinstance(header.kind, Kind) and isinstance(header.codec, Codec)

    @FUZZ
    @given(
        st.binary(min_size=HEADER_SIZE - 3, max_size=HEADER_SIZE - 3).map(
            lambda tail: protocol.MAGIC + bytes([protocol.VERSION]) + tail
        )
    )
    def test_decode_header_fuzz_past_the_magic(frame):
        # Random bytes rarely start with the magic: also fuzz what follows it.
        try:
            header = decode_header(frame)
        except ProtocolError:
            return
        assert header.msg_id == frame[5:]

    @FUZZ
    @given(st.binary(max_size=256), st.sampled_from(list(Codec)))
    def test_decode_body_fuzz(frame, codec):
        try:
            body = decode_body(frame, codec)
        except ProtocolError:
            return
        assert isinstance(body, dict)

    _json_values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.floats(allow_nan=False)
        | st.text(),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=12,
    )

    @FUZZ_BODIES
    @given(
        st.dictionaries(st.text(max_size=8), _json_values, max_size=5), st.sampled_from(list(Codec))
    )
    def test_body_round_trip_fuzz(body, codec):
        assert decode_body(encode_body(body, codec), codec) == body

    @FUZZ_BODIES
    @given(st.dictionaries(st.text(max_size=8), _json_values, max_size=5), st.data())
    def test_decode_body_fuzz_mutated_frames(body, data):
        # Valid frames with a byte flipped or cut: closer to what a confused peer sends.
        codec = data.draw(st.sampled_from(list(Codec)))
        frame = bytearray(encode_body(body, codec))
        index = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
        frame[index] = data.draw(st.integers(min_value=0, max_value=255))
        frame = bytes(frame[: data.draw(st.integers(min_value=0, max_value=len(frame)))])
        try:
            decoded = decode_body(frame, codec)
        except ProtocolError:
            return
        assert isinstance(decoded, dict)


def test_message_ids_are_unique_within_a_process_and_across_a_fork():
    ids = {protocol.new_msg_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child sends the ids it makes back, then exits at once
        os.write(write, b"".join(protocol.new_msg_id() for _ in range(100)))
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    child = {data[i : i + 16] for i in range(0, len(data), 16)}
    assert len(child) == 100
    assert not child & ids, "a forked child repeated its parent's message ids"
    assert not child & {protocol.new_msg_id() for _ in range(100)}
