"""`python -m benchmark report DIR`: a sweep's report. Loads its runs (results.py), aggregates them
(stats.py), draws the learning curves and performance profiles (plots.py) and writes report.md and runs.csv
(tables.py):

    DIR/report/report.md         per (config, env) the final return over seeds with a 95% Student-t interval
                                 of the mean beside the paper's number; IQM, mean and median over groups of
                                 tasks with 95% stratified bootstrap intervals (rliable); human-normalised
                                 Atari scores; a warning naming the intervals that rest on fewer than 5 seeds
    DIR/report/runs.csv          every run: final return, eval, steps, steps/s, state
    DIR/report/curves/*.png      learning curves, one per env and one of every env; performance profiles,
                                 profile-<family>.png, one per group of tasks

It prints that warning, and the path of report.md, on stderr. Every interval and figure is seeded: the same
runs give the same report.
"""

import os
import sys

from benchmark import suites
from benchmark.common import atomic_write
from benchmark.plots import plot_curves, plot_profiles
from benchmark.results import load_runs, sweep_suites
from benchmark.stats import aggregate, group_iqms
from benchmark.tables import few_seeds_warning, markdown, runs_csv


def main(root: str, out: str | None = None, last: int | None = None, plots: bool = True) -> str:
    """Write report.md, runs.csv, curves/<env>.png and curves/profile-<family>.png under out (default
    ROOT/report); return the Markdown. `last` defaults to the sweep's suite's number of final episodes (20
    for most, 100 for PPO Table 6)."""
    suite_names = sweep_suites(root)
    if last is None:
        one_suite = len(suite_names) == 1 and suite_names[0] in suites.SUITES
        last = suites.SUITES[suite_names[0]].last_episodes if one_suite else 20
    if last < 1:
        raise ValueError("--last must be at least 1")
    out = out or os.path.join(root, "report")
    runs = load_runs(root)
    if not runs:
        raise SystemExit(f"no runs found under {root}")
    os.makedirs(out, exist_ok=True)
    rows, iqm_rows = aggregate(runs, last), group_iqms(runs, last)
    figures = plot_curves(runs, last, out) if plots else {}
    profiles = plot_profiles(runs, last, out) if plots else {}
    text = markdown(rows, iqm_rows, runs, last, suite_names, figures, root, profiles)
    for name, content in (("report.md", text), ("runs.csv", runs_csv(runs, last, root))):
        def write(tmp, content=content):
            with open(tmp, "w") as f:
                f.write(content)

        atomic_write(os.path.join(out, name), write)
    warning = few_seeds_warning(rows, iqm_rows)
    if warning:
        print(warning, file=sys.stderr)
    print(f"report: {os.path.join(out, 'report.md')}", file=sys.stderr)
    return text
