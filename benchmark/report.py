"""`python -m benchmark report DIR`: a sweep's report. Loads its runs (results.py), aggregates them
(stats.py), draws the learning curves (plots.py) and writes report.md and runs.csv (tables.py):

    DIR/report/report.md         per (config, env) the final return over seeds with a 95% bootstrap CI beside
                                 the paper's number; IQM over groups of tasks; human-normalised Atari scores
    DIR/report/runs.csv          every run: final return, eval, steps, steps/s, state
    DIR/report/curves/*.png      learning curves, one per env and one of every env
"""

import os

from benchmark import suites
from benchmark.common import atomic_write
from benchmark.plots import plot_curves
from benchmark.results import load_runs, sweep_suites
from benchmark.stats import aggregate, group_iqms
from benchmark.tables import markdown, runs_csv


def main(root: str, out: str | None = None, last: int | None = None, plots: bool = True) -> str:
    """Write report.md, runs.csv and curves/<env>.png under out (default ROOT/report); return the Markdown.
    `last` defaults to the sweep's suite's number of final episodes (20 for most, 100 for PPO Table 6)."""
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
    rows = aggregate(runs, last)
    figures = plot_curves(runs, last, out) if plots else {}
    text = markdown(rows, group_iqms(runs, last), runs, last, suite_names, figures, root)
    for name, content in (("report.md", text), ("runs.csv", runs_csv(runs, last))):
        def write(tmp, content=content):
            with open(tmp, "w") as f:
                f.write(content)

        atomic_write(os.path.join(out, name), write)
    return text
