"""The zmqdriver benchmark: ``python bench/run.py`` (see doc/benchmarks.md)."""
