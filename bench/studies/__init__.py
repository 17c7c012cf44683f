"""One-off studies behind figures in doc/ (``python -m bench.studies.<name>``).

Each answers one question once asked (what the I/O-loop hand-off costs, where a call's time
goes, idle CPU, client memory, how zmq:// scales); the headline benchmark, ``bench.run``,
does not need them. They share the benchmark's parts (``bench.procs``, ``bench.config``,
``bench.report``, ...) and never import ``bench.run``.
"""
