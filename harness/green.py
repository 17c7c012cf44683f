"""Run a module under eventlet: ``python -m harness.green MODULE [ARGS...]``.

eventlet has to patch the standard library before anything imports ``threading``, so the
patching cannot sit among a module's imports. This launcher patches first, then runs
``MODULE`` as ``__main__`` with ``ARGS`` as its command line.
"""

import runpy
import sys
import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    import eventlet


def command(module: str, *args: str) -> list[str]:
    """The command line that runs ``python -m <module> <args>`` under eventlet."""
    return [sys.executable, "-m", "harness.green", module, *args]


def main() -> None:
    eventlet.monkey_patch()
    module, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
