"""Pipeline benchmarks on the local stack: `python -m bench --help` (see bench/README.md).

Every measurement runs in its own namespace (topic prefix ``bench-<name>-<run>.`` and a fresh
database ``bench_<run>``) and removes its topics, consumer groups, database and local state when
it finishes. ``bench/codec.py`` is the separate, broker-free codec micro-benchmark.
"""
