"""The scale harness: an OpenStack-shaped deployment on one machine (issue 12).

    python -m bench.scale --hosts N --url zmq+redis:// [--url rabbit://guest:guest@127.0.0.1:5672/]

Processes, all started and stopped by PID from ``run.py``:

* ``hosts.py``: many hosts per OS process, each with its own loopback address
  (127.1.x.y as ``rpc_zmq_host`` and bind address), its own transports and an RPC server
  on topic ``compute`` with ``server=<host>``; every host calls ``conductor`` and sends a
  notification every 10 s;
* ``controller.py``: three conductors (topic ``conductor``), each also a listener of
  the one notification pool;
* ``api.py``: one API-like client: pings every host until it answers, then directed calls
  and casts to random hosts and a fanout cast to every host every second.

Processes meet through files in the run directory (``common.RunDir``); the numbers they
write are merged by ``report.py`` into one table, a column per transport URL.
"""
