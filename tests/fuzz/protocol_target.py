"""atheris (libFuzzer) target: the frame decoders may raise ProtocolError, nothing else.

    python -m tests.fuzz.protocol_target -runs=20000 [-seed=N] [-artifact_prefix=DIR/]

Coverage-guided, unlike the hypothesis tests in tests/unit/test_protocol.py:
atheris instruments zmqdriver.protocol and the decoders it calls (oslo_serialization, json)
and mutates inputs toward new branches.
The first input byte picks what is fuzzed (header, JSON body, msgpack body).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["zmqdriver.protocol", "oslo_serialization", "json"]):
    from zmqdriver import protocol


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    choice, frame = data[0] % 3, data[1:]
    try:
        if choice == 0:
            header = protocol.decode_header(frame)
            assert header.msg_id == frame[5:]
        else:
            codec = protocol.Codec.JSON if choice == 1 else protocol.Codec.MSGPACK
            body = protocol.decode_body(frame, codec)
            assert isinstance(body, dict)
    except protocol.ProtocolError:
        pass  # the one error a bad frame may cause


def main() -> None:
    atheris.Setup(sys.argv, fuzz_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
