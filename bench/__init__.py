"""Benchmark harness: filterd versus Unbound-with-RPZ on the same list and the same traffic.

The package is a dev tool, not part of the daemon: ``bench/run`` is the one entry point.
"""
