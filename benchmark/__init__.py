"""Benchmarks of the scripts in algos/: `python -m benchmark run|suites|report|throughput|peers` (see __main__.py).

What to run: suites.py holds the papers' tables (configs, envs, budgets, published numbers); registry.py
each script's presets and variants; plan.py turns them into runs and command lines (pure functions).
Running a sweep: sweep.py plans and drives it (or prints a dry run); status.py keeps the sweep directory
(run directories, status.json, run.lock and sweep.lock, sweep.json); execute.py starts the runs as local
processes or Ray tasks, or prints a Slurm array script; progress.py shows the status line, ETA and failures.
Reporting: report.py writes the report of a sweep from results.py (loading runs and reference data),
stats.py (intervals, IQMs, normalised scores, curves), tables.py (Markdown and CSV) and plots.py (figures).
Speed: throughput.py measures training vs raw env steps/s and, with flops.py, how far each update runs from the
machine's limit; peers.py runs our scripts against Stable-Baselines3 side by side. common.py holds the atomic
file writes.
"""
