"""What the tests and the benchmarks both need to set up real parts on this machine.

A plain package at the repository root, not installed: ``python -m bench.run`` and
``pytest`` (from the root, where ``tests/`` is a package) import it as ``harness``.

* ``harness.config``: the driver's config file.
* ``harness.wait``: waiting for a condition by polling, never by a fixed sleep.
* ``harness.net``: the loopback address and free ports on it.
* ``harness.redis_server``: a private ``redis-server``, started on a free port and stopped by PID.
* ``harness.green``: run a module under eventlet, monkey-patched before it is imported.
"""
