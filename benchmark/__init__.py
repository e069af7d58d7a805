"""Benchmarks of the scripts in algos/: `python -m benchmark run|suites|report|throughput` (see __main__.py).

sweep.py runs (config, env, seed) sweeps locally, on Ray or as a Slurm array; suites.py holds the papers'
tables; registry.py the per-script presets and variants; report.py the statistics, tables and curves;
throughput.py the training vs raw env steps/s.
"""
