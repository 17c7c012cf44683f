"""Notifications: store-and-forward through the matchmaker's backend.

``store`` defines the contract (streams with consumer groups, as Redis
Streams has them), ``sqlite_store`` and ``redis_store`` implement it for
``zmq://`` and ``zmq+redis://``, ``listener`` adapts it to oslo.messaging.
"""
