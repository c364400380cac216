"""Benchmarks for jobhost: `python -m bench.drain` (what `make bench` runs). See bench/README.md."""
