"""The zmqdriver benchmark: ``python -m bench.run``; one-off studies in ``bench.studies``.

Everything here runs from the repository root as ``python -m bench...`` (see
doc/benchmarks.md), so this package runs first in each of the benchmark's processes.
"""

import warnings

# A benchmark's output is its numbers: deprecation notices of the libraries (eventlet's on
# import, oslo.messaging's on the executor argument) are noise in every process here.
warnings.simplefilter("ignore")
