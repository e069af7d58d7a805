"""Benchmarks of the algorithms in algos/ (run them as `python -m benchmark.<name>`)."""
