"""Benchmarks of the metadata-DB source against a naive all-time exporter (see docs/performance.md).

Run as modules from the repository root: ``python -m bench.generate_history`` and
``python -m bench.bench_poll``.
"""
