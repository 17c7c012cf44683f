"""The ZeroMQ context is sized for a fanout to every server, not for zmq_max_connections."""

from __future__ import annotations

import zmq

from zmqdriver.driver import _max_sockets


def test_a_fanout_to_ten_thousand_servers_fits_whatever_the_connection_cache():
    # A busy connection (a copy in flight) is never closed: a fanout holds three sockets
    # (DEALER and monitor pair) per server at once.
    for max_connections in (1, 256, 1024):
        assert _max_sockets(max_connections) >= 3 * 10_000


def test_a_large_connection_cache_still_gets_room_for_its_own_sockets():
    assert _max_sockets(20_000) >= 3 * 20_000


def test_every_size_is_one_libzmq_accepts():
    context = zmq.Context()
    try:
        for max_connections in (0, 256, 20_000, 100_000):
            context.max_sockets = _max_sockets(max_connections)
            assert context.max_sockets <= context.get(zmq.SOCKET_LIMIT)
    finally:
        context.term()
