"""The report's text: the Markdown report (its tables of final returns beside the papers' numbers and of
IQMs across tasks, the warning about intervals on few seeds, the runs that did not finish, the figures)
and the CSV of every run."""

import csv
import io
import math
import os

from benchmark import suites
from benchmark.results import RunResult
from benchmark.stats import FEW_SEEDS, evaluations, human_normalised


def fmt(x: float, digits: int | None = None) -> str:
    """A number as the report shows it: `digits` decimals, else fewer the larger it is; "-" for none."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if digits is not None:
        return f"{x:.{digits}f}"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def fmt_ci(ci, digits: int | None = None) -> str:
    return "" if math.isnan(ci[0]) else f" [{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def few_seeds_warning(rows: list[dict], iqm_rows: list[dict]) -> str:
    """One line naming the rows of stats.aggregate and stats.group_iqms whose intervals rest on fewer than
    FEW_SEEDS seeds (or that have a single seed, hence no interval); "" when there are none."""
    named, across = [], False
    for r in rows:
        n, n_eval = r["final_seeds"], r["eval_seeds"]
        if 0 < n < FEW_SEEDS or 0 < n_eval < FEW_SEEDS:
            seeds = plural(n, "seed") + (f", eval {n_eval}" if n_eval and n_eval != n else "")
            named.append(f"`{r['config']}` {r['env_id']} ({seeds}{': no interval' if n == 1 else ''})")
    for r in iqm_rows:
        if r["seeds"] < FEW_SEEDS:
            across = True
            named.append(f"`{r['config']}` across {r['tasks']} {r['family']} tasks ({plural(r['seeds'], 'seed')} "
                         f"a task{': no interval' if r['seeds'] == 1 else ''})")
    if not named:
        return ""
    text = (f"Warning: fewer than {FEW_SEEDS} seeds behind " + ", ".join(named) + "; intervals on so few seeds "
            "are wide, and the Student-t interval leans on the seeds' returns being roughly normal, which so few "
            "cannot show")
    if across:
        text += ("; the stratified bootstrap across tasks is too narrow at so few seeds (simulated, it covered the "
                 "true mean about 90% of the time at 5 seeds, 80-85% at 3)")
    return text + "."


MEASURE_NAMES = {"eval": "eval", "eval_max": "eval max"}  # as a ratio's cell names the measure it compares


def markdown(rows: list[dict], iqm_rows: list[dict], runs: list[RunResult], last: int, suite_names: list[str],
             plots: dict, root: str = ".", profiles: dict | None = None) -> str:
    """report.md: the rows of stats.aggregate and stats.group_iqms as tables, the warning about intervals on
    few seeds, the sources of the papers' numbers, the runs left out (their logs relative to root), and the
    figures: learning curves `plots` and performance profiles `profiles` (title -> path)."""
    out = io.StringIO()
    out.write("# Benchmark report\n\n")
    for name in suite_names:
        if name in suites.SUITES:
            suite = suites.SUITES[name]
            out.write(f"Suite `{name}`: {suite.description}. Reference numbers: {suite.paper_metric}.\n\n")
    out.write(f"Ours: mean over seeds of each run's last {last} training episodes, with a 95% Student-t interval "
              "of that mean (mean +- t s / sqrt(n) over the n seeds of the seeds column; none for one seed); "
              "eval: the final evaluation in summary.json, its mean over the seeds with the same interval. "
              "Ratio = ours / paper, where the paper's number is positive, ours being our final return")
    if any(r["measure"] != "final" and not math.isnan(r["ratio"]) for r in rows):
        out.write(" or, where the cell names it, our eval or eval max: the paper's own measure")
    out.write(".")
    every = sorted({r["curve_every"] for r in rows if r["curve_every"]})
    if every:  # only where a run recorded an evaluation curve: the on-policy scripts record none
        out.write(" eval max: the maximum over training of the seed-mean noise-free evaluation curve (evaluations "
                  f"every {' or '.join(f'{n:,}' for n in every)} steps), the TD3 paper's Table 1 measure; no "
                  "interval.")
    out.write("\n\n")
    warning = few_seeds_warning(rows, iqm_rows)
    if warning:
        out.write(f"**{warning}**\n\n")
    atari = any(not math.isnan(r["hns"]) for r in rows)
    header = ["algo", "env", "steps", "seeds", f"ours (last {last})", "eval", "paper", "ratio"]
    header += ["HNS"] if atari else []
    header += ["eval max (step)"] if every else []
    out.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
    for r in rows:
        seeds = f"{r['finished']}" if r["finished"] == r["runs"] else f"{r['finished']}/{r['runs']}"
        short = r["reference_steps"] and r["steps"] and r["steps"] < 0.9 * r["reference_steps"]
        cells = [f"`{r['config']}`", r["env_id"], f"{r['steps']:,}" if r["steps"] else "-", seeds,
                 fmt(r["final_mean"]) + fmt_ci(r["final_ci"]), fmt(r["eval_mean"]) + fmt_ci(r["eval_ci"]),
                 fmt(r["reference"]) + (f" (at {r['reference_steps']:,} steps)" if short else ""),
                 fmt(r["ratio"], 2) + (f" ({MEASURE_NAMES[r['measure']]})" if r["measure"] != "final"
                                       and not math.isnan(r["ratio"]) else "")]
        if atari:
            cells.append(fmt(r["hns"], 2))
        if every:
            seeds_note = f"; {plural(r['curve_seeds'], 'seed')}" if r["curve_seeds"] != r["finished"] else ""
            cells.append(fmt(r["curve_max"]) + (f" ({r['curve_max_step']:,}{seeds_note})" if r["curve_seeds"] else ""))
        out.write("| " + " | ".join(cells) + " |\n")
    if iqm_rows:
        out.write("\nAcross tasks (each run's score normalised; IQM = interquartile mean of the runs, mean and "
                  "median of the tasks' mean scores, each with a 95% stratified bootstrap interval: rliable's, "
                  "resampling runs within each task; seeds: the runs of each task used):\n\n"
                  "| algo | tasks | seeds | runs | scale | IQM | mean | median |\n|---|---|---|---|---|---|---|---|\n")
        for r in iqm_rows:
            numbers = [f"{fmt(r[k], 2)}{fmt_ci(r[k + '_ci'], 2)}" for k in ("iqm", "mean", "median")]
            out.write(f"| `{r['config']}` | {r['tasks']} {r['family']} | {r['seeds']} | {r['runs']} | {r['scale']} | "
                      + " | ".join(numbers) + " |\n")
        for r in iqm_rows:
            if r["left_out"]:
                out.write(f"\n`{r['config']}` on {r['family']}: its tasks have different numbers of seeds; the "
                          f"statistics across tasks take each task's first {plural(r['seeds'], 'seed')} (by seed "
                          f"number), leaving out {plural(r['left_out'], 'run')}.\n")
    sources = sorted({r["source"] for r in rows if r["source"]})
    if sources:
        out.write("\nSources of the reference numbers: " + "; ".join(sources) + ".\n")
    if atari:
        out.write("\nHNS: human-normalised score (ours - random) / (human - random), random and human scores of "
                  "the DQN papers' table (benchmark/data/atari_random_human.csv).\n")
    unfinished = [r for r in runs if r.state != "finished"]
    if unfinished:
        out.write("\nNot finished (left out of the numbers above):\n\n")
        for r in unfinished:
            log = os.path.relpath(os.path.join(r.run_dir, "run.log"), root)
            out.write(f"- `{r.name}`: {r.state}" + ("" if r.state == "not started" else f" (log: {log})") + "\n")
    if plots:
        out.write("\nLearning curves (band: 95% Student-t interval of the mean over the seeds):\n\n")
        for env_id, path in plots.items():
            out.write(f"![{env_id}]({path})\n")
    if profiles:
        out.write("\nPerformance profiles (the fraction of runs whose normalised score exceeds each threshold; "
                  "band: 95% stratified bootstrap interval, rliable's; the runs of the table across tasks):\n\n")
        for title, path in profiles.items():
            out.write(f"![{title}]({path})\n")
    return out.getvalue()


CSV_FIELDS = ["name", "config", "algo", "env_id", "seed", "state", "total_timesteps", "total_steps", "episodes",
              "final_return", "eval_return", "hns", "reference", "sps", "wall_time", "run_dir", "eval_max"]


def runs_csv(runs: list[RunResult], last: int, root: str | None = None) -> str:
    """runs.csv: one row of CSV_FIELDS per run, finished or not; eval_max, the maximum of the run's own
    evaluation curve (summary.json's "evaluations"), is empty without one. run_dir is relative to root (the
    sweep's folder) where given, so that a committed runs.csv names no folder of the machine it ran on."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in runs:
        summary = r.summary or {}
        hns = human_normalised(r.env_id, r.final(last)) if len(r.returns) else None
        curve = evaluations(r)
        writer.writerow({"name": r.name, "config": r.config, "algo": r.config.split(":")[0], "env_id": r.env_id,
                         "seed": r.seed, "state": r.state, "total_timesteps": r.total_timesteps,
                         "total_steps": summary.get("total_steps", int(r.steps[-1]) if len(r.steps) else 0),
                         "episodes": len(r.returns), "final_return": r.final(last), "eval_return": r.eval,
                         "hns": "" if hns is None else hns, "reference": "" if r.reference is None else r.reference,
                         "sps": summary.get("sps", ""), "wall_time": summary.get("wall_time", ""),
                         "run_dir": os.path.relpath(r.run_dir, root) if root else r.run_dir,
                         "eval_max": max(curve.values()) if curve else ""})
    return out.getvalue()
