"""The I/O loop that owns every ZeroMQ socket of a driver, and its runtimes.

One native thread per driver runs ``IoLoop``; application threads (or
greenthreads) hand it work with ``submit``/``call`` and get results back
through the runtime:

* ``native.NativeRuntime`` (plain threads): the loop completes waiters directly;
* ``green.GreenRuntime`` (eventlet monkey-patched process): the loop passes
  completions to a greenthread in the hub through a pipe, so no native thread
  ever touches an eventlet primitive.
"""

from __future__ import annotations

from zmqdriver.eventloop.loop import IoLoop, native_lock
from zmqdriver.eventloop.runtime import Runtime, runtime_for_process

__all__ = ["IoLoop", "Runtime", "native_lock", "runtime_for_process"]
