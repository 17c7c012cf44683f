"""RPC over ZeroMQ: the client side (``client``, ``outbox``) and the server side (``server``)."""
