"""Aggregate a sweep: per (config, env) the final return over seeds with a 95% bootstrap CI, beside the
paper's number; IQM over groups of tasks; human-normalised Atari scores; learning curves; a CSV of every run.

Statistics are scipy's: `scipy.stats.bootstrap` (percentile intervals, 10,000 resamples, a fixed seed, so
a report is reproducible) for the mean over seeds and for the IQM, and `scipy.stats.trim_mean(x, 0.25)`
for the interquartile mean (Agarwal et al. 2021). The IQM's interval resamples runs, not runs within
tasks (rliable's stratified bootstrap), which makes it somewhat wider.

Per run, "final return" is the mean of the last N training episodes of episodes.csv (N = --last, 20 by
default) and "eval" is the final evaluation that summary.json records (its "eval" entry).
"""

import csv
import io
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from benchmark import registry, suites
from benchmark.common import atomic_write
from benchmark.sweep import read_json

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
RESAMPLES = 10_000


def read_reference_csv(name: str) -> list[dict]:
    with open(os.path.join(DATA, name)) as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def atari_scores() -> dict:
    """game (snake_case) -> (random, human): the table in data/atari_random_human.csv, with its source."""
    rows = read_reference_csv("atari_random_human.csv")
    return {row["game"]: (float(row["random"]), float(row["human"])) for row in rows}


def atari_game(env_id: str) -> str | None:
    """BreakoutNoFrameskip-v4, ALE/Breakout-v5 -> breakout; UpNDown -> up_n_down; None for other envs."""
    if registry.env_family(env_id) != "atari":
        return None
    name = env_id.removeprefix("ALE/").split("-v")[0].removesuffix("NoFrameskip").removesuffix("Deterministic")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def human_normalised(env_id: str, score: float, table: dict | None = None) -> float | None:
    """(score - random) / (human - random), or None for a game (or env) the table does not have."""
    game = atari_game(env_id)
    table = atari_scores() if table is None else table
    if game not in table:
        return None
    random_score, human = table[game]
    return (score - random_score) / (human - random_score)


def iqm(values) -> float:
    """Interquartile mean: the mean of the middle 50% (scipy's trim_mean cutting 25% at each end)."""
    return float(stats.trim_mean(np.asarray(values, dtype=float), 0.25))


def bootstrap_ci(values, statistic=np.mean) -> tuple[float, float]:
    """95% percentile bootstrap interval of statistic over values; (nan, nan) below two values, (v, v) when
    all are equal."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return math.nan, math.nan
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    result = stats.bootstrap((values,), lambda x, axis: statistic(x, axis=axis), confidence_level=0.95,
                             n_resamples=RESAMPLES, method="percentile", random_state=np.random.default_rng(0))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def trimmed_mean(x, axis=0):
    return stats.trim_mean(x, 0.25, axis=axis)


# --------------------------------------------------------------------------------------------------
# Reading runs
# --------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    name: str
    config: str
    env_id: str
    seed: int
    run_dir: str
    state: str
    total_timesteps: int | None = None
    reference: float | None = None
    source: str = ""
    reference_steps: int | None = None
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    returns: np.ndarray = field(default_factory=lambda: np.zeros(0))
    summary: dict | None = None

    def final(self, last: int) -> float:
        return float(np.mean(self.returns[-last:])) if len(self.returns) else math.nan

    @property
    def eval(self) -> float:
        return float(((self.summary or {}).get("eval") or {}).get("mean_return", math.nan))


def read_episodes(path: str) -> tuple[np.ndarray, np.ndarray]:
    """global_step and episodic_return of episodes.csv, sorted by step; empty when missing."""
    try:
        with open(path, newline="") as f:
            rows = [(int(r["global_step"]), float(r["episodic_return"])) for r in csv.DictReader(f)
                    if r.get("global_step") and r.get("episodic_return")]
    except OSError:
        rows = []
    rows.sort(key=lambda r: r[0])
    return np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=float)


def find_run_dirs(root: str) -> list[str]:
    """Folders under root holding a run (status.json, summary.json or episodes.csv), the report's own excluded."""
    found = []
    for path, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in ("report", "videos", "wandb"))
        if {"status.json", "summary.json", "episodes.csv"} & set(files):
            found.append(path)
            dirs[:] = []
    return found


def load_runs(root: str) -> list[RunResult]:
    """The runs of a sweep directory: those sweep.json lists (with their published numbers), else every run
    directory found under root, described by its status.json or summary.json."""
    sweep_file = read_json(os.path.join(root, "sweep.json"))
    listed = {r["name"]: r for r in (sweep_file or {}).get("runs", [])}
    results = []
    for run_dir in find_run_dirs(root):
        status = read_json(os.path.join(run_dir, "status.json")) or {}
        summary = read_json(os.path.join(run_dir, "summary.json"))
        if isinstance(summary, dict) and summary.get("interrupted"):
            summary = None
        args = (summary or {}).get("args", {})
        name = status.get("name") or os.path.basename(run_dir)
        entry = listed.get(name, {})
        config = entry.get("config") or status.get("config") or (summary or {}).get("algo") or args.get("exp_name")
        env_id = entry.get("env_id") or status.get("env_id") or (summary or {}).get("env_id") or args.get("env_id")
        seed = entry.get("seed", status.get("seed", (summary or {}).get("seed", args.get("seed"))))
        if config is None or env_id is None:
            continue
        state = "finished" if summary else status.get("state", "unknown")
        budget = entry.get("total_timesteps", status.get("total_timesteps", args.get("total_timesteps")))
        reference, source = entry.get("reference"), entry.get("source", "")
        reference_steps = entry.get("reference_steps")
        if reference is None and not listed:
            ref = suites.find_reference(config, env_id, budget)
            if ref:
                reference, source, reference_steps = ref.reference, ref.source, ref.total_timesteps
        steps, returns = read_episodes(os.path.join(run_dir, "episodes.csv"))
        results.append(RunResult(name, config, env_id, int(seed) if seed is not None else 0, run_dir, state, budget,
                                 reference, source, reference_steps, steps, returns, summary))
    found = {r.name for r in results}
    for name, entry in listed.items():  # listed by the sweep but never started (a sweep stopped early)
        if name not in found:
            results.append(RunResult(name, entry["config"], entry["env_id"], entry["seed"],
                                     os.path.join(root, "runs", name), "not started", entry.get("total_timesteps"),
                                     entry.get("reference"), entry.get("source", ""), entry.get("reference_steps")))
    return sorted(results, key=lambda r: (r.config, r.env_id, r.seed))


# --------------------------------------------------------------------------------------------------
# Aggregates
# --------------------------------------------------------------------------------------------------


def aggregate(runs: list[RunResult], last: int) -> list[dict]:
    """One row per (config, env) over its finished runs: mean and CI of the final return and of the eval,
    the paper's number and the ratio ours / paper (given only where the paper's number is positive: for
    negative returns a ratio reads backwards), and the human-normalised score on Atari."""
    groups = defaultdict(list)
    for run in runs:
        groups[(run.config, run.env_id)].append(run)
    rows = []
    for (config, env_id), members in groups.items():
        done = [r for r in members if r.state == "finished"]
        finals = [r.final(last) for r in done if len(r.returns)]
        evals = [r.eval for r in done if not math.isnan(r.eval)]
        reference = next((r.reference for r in members if r.reference is not None), None)
        source = next((r.source for r in members if r.source), "")
        mean = float(np.mean(finals)) if finals else math.nan
        row = {"config": config, "env_id": env_id, "runs": len(members), "finished": len(done),
               "steps": int(np.median([r.summary.get("total_steps", 0) for r in done])) if done else 0,
               "final_mean": mean, "final_ci": bootstrap_ci(finals),
               "eval_mean": float(np.mean(evals)) if evals else math.nan, "eval_ci": bootstrap_ci(evals),
               "reference": reference, "source": source,
               "ratio": mean / reference if reference and reference > 0 and finals else math.nan,
               "reference_steps": next((r.reference_steps for r in members if r.reference_steps), None)}
        hns = human_normalised(env_id, mean) if finals else None
        row["hns"] = math.nan if hns is None else hns
        rows.append(row)
    return sorted(rows, key=lambda r: (r["config"], registry.env_family(r["env_id"]), r["env_id"]))


def normalised_score(run: RunResult, last: int) -> float | None:
    """A run's score on a scale shared by tasks: human-normalised on Atari, else ours / paper where the
    paper's number is positive; None when there is no such scale."""
    final = run.final(last)
    if math.isnan(final):
        return None
    if registry.env_family(run.env_id) == "atari":
        return human_normalised(run.env_id, final)
    if run.reference and run.reference > 0:
        return final / run.reference
    return None


def group_iqms(runs: list[RunResult], last: int) -> list[dict]:
    """Per config and env family with at least two tasks: IQM (with CI), mean and median over the runs'
    normalised scores, when every task has a normalised score."""
    groups = defaultdict(list)
    for run in runs:
        if run.state == "finished":
            groups[(run.config, registry.env_family(run.env_id))].append(run)
    rows = []
    for (config, family), members in sorted(groups.items()):
        tasks = {r.env_id for r in members}
        scores = [normalised_score(r, last) for r in members]
        if len(tasks) < 2 or any(s is None for s in scores):
            continue
        per_task = defaultdict(list)
        for run, score in zip(members, scores):
            per_task[run.env_id].append(score)
        task_means = [np.mean(v) for v in per_task.values()]
        rows.append({"config": config, "family": family, "tasks": len(tasks), "runs": len(members),
                     "scale": "human-normalised" if family == "atari" else "ours / paper",
                     "iqm": iqm(scores), "iqm_ci": bootstrap_ci(scores, trimmed_mean),
                     "mean": float(np.mean(task_means)), "median": float(np.median(task_means))})
    return rows


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------


def fmt(x: float, digits: int | None = None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if digits is not None:
        return f"{x:.{digits}f}"
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def fmt_ci(ci) -> str:
    return "" if math.isnan(ci[0]) else f" [{fmt(ci[0])}, {fmt(ci[1])}]"


def markdown(rows: list[dict], iqm_rows: list[dict], runs: list[RunResult], last: int, suite_names: list[str],
             plots: dict, root: str = ".") -> str:
    out = io.StringIO()
    out.write("# Benchmark report\n\n")
    for name in suite_names:
        if name in suites.SUITES:
            suite = suites.SUITES[name]
            out.write(f"Suite `{name}`: {suite.description}. Paper's numbers: {suite.paper_metric}.\n\n")
    out.write(f"Ours: mean over seeds of each run's last {last} training episodes, with a 95% bootstrap CI over "
              "seeds; eval: the final evaluation in summary.json. Ratio = ours / paper, where the paper's number "
              "is positive.\n\n")
    atari = any(not math.isnan(r["hns"]) for r in rows)
    header = ["algo", "env", "steps", "seeds", f"ours (last {last})", "eval", "paper", "ratio"]
    header += ["HNS"] if atari else []
    out.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
    for r in rows:
        seeds = f"{r['finished']}" if r["finished"] == r["runs"] else f"{r['finished']}/{r['runs']}"
        short = r["reference_steps"] and r["steps"] and r["steps"] < 0.9 * r["reference_steps"]
        cells = [f"`{r['config']}`", r["env_id"], f"{r['steps']:,}" if r["steps"] else "-", seeds,
                 fmt(r["final_mean"]) + fmt_ci(r["final_ci"]), fmt(r["eval_mean"]),
                 fmt(r["reference"]) + (f" (at {r['reference_steps']:,} steps)" if short else ""), fmt(r["ratio"], 2)]
        if atari:
            cells.append(fmt(r["hns"], 2))
        out.write("| " + " | ".join(cells) + " |\n")
    if iqm_rows:
        out.write("\nAcross tasks (each run's score normalised; IQM = interquartile mean over runs, 95% bootstrap CI; "
                  "mean and median over tasks):\n\n| algo | tasks | runs | scale | IQM | mean | median |\n"
                  "|---|---|---|---|---|---|---|\n")
        for r in iqm_rows:
            low, high = r["iqm_ci"]
            ci = "" if math.isnan(low) else f" [{low:.2f}, {high:.2f}]"
            out.write(f"| `{r['config']}` | {r['tasks']} {r['family']} | {r['runs']} | {r['scale']} | "
                      f"{fmt(r['iqm'], 2)}{ci} | {fmt(r['mean'], 2)} | {fmt(r['median'], 2)} |\n")
    sources = sorted({r["source"] for r in rows if r["source"]})
    if sources:
        out.write("\nSources of the paper's numbers: " + "; ".join(sources) + ".\n")
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
        out.write("\nLearning curves:\n\n")
        for env_id, path in plots.items():
            out.write(f"![{env_id}]({path})\n")
    return out.getvalue()


CSV_FIELDS = ["name", "config", "algo", "env_id", "seed", "state", "total_timesteps", "total_steps", "episodes",
              "final_return", "eval_return", "hns", "reference", "sps", "wall_time", "run_dir"]


def runs_csv(runs: list[RunResult], last: int) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in runs:
        summary = r.summary or {}
        hns = human_normalised(r.env_id, r.final(last)) if len(r.returns) else None
        writer.writerow({"name": r.name, "config": r.config, "algo": r.config.split(":")[0], "env_id": r.env_id,
                         "seed": r.seed, "state": r.state, "total_timesteps": r.total_timesteps,
                         "total_steps": summary.get("total_steps", int(r.steps[-1]) if len(r.steps) else 0),
                         "episodes": len(r.returns), "final_return": r.final(last), "eval_return": r.eval,
                         "hns": "" if hns is None else hns, "reference": "" if r.reference is None else r.reference,
                         "sps": summary.get("sps", ""), "wall_time": summary.get("wall_time", ""),
                         "run_dir": r.run_dir})
    return out.getvalue()


def curve(run: RunResult, grid: np.ndarray, last: int) -> np.ndarray:
    """The mean of the last `last` episodes finished by each grid step (nan before the first episode)."""
    if not len(run.returns):
        return np.full(len(grid), math.nan)
    cumulative = np.concatenate([[0.0], np.cumsum(run.returns)])
    count = np.searchsorted(run.steps, grid, side="right")  # episodes finished by each grid step
    first = np.maximum(count - last, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = (cumulative[count] - cumulative[first]) / (count - first)
    return np.where(count > 0, values, math.nan)


def td3_paper_curve(env_id: str):
    rows = [r for r in read_reference_csv("td3_paper_curves.csv") if r["env"] == env_id.split("-v")[0]]
    if not rows:
        return None
    return (np.array([float(r["step"]) for r in rows]), np.array([float(r["mean"]) for r in rows]),
            np.array([float(r["std"]) for r in rows]))


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def config_colours(runs: list[RunResult]) -> dict:
    """One colour per config, the same on every figure of a report."""
    colours = pyplot().get_cmap("tab10").colors
    return {config: colours[i % len(colours)] for i, config in enumerate(sorted({r.config for r in runs}))}


def draw_env(ax, env_id: str, runs: list[RunResult], last: int, colours: dict, small: bool = False) -> None:
    """Learning curves of every config on one env: mean over seeds, shaded 95% bootstrap CI, the paper's
    number as a dashed line of the same colour (and the TD3 paper's own curve where we have it)."""
    from matplotlib.ticker import EngFormatter

    for config in sorted({r.config for r in runs}):
        colour = colours[config]
        members = [r for r in runs if r.config == config and len(r.steps)]
        if not members:
            continue
        end = min(int(r.steps[-1]) for r in members)  # the range every seed covers
        grid = np.linspace(0, end, 200)
        curves = np.array([curve(r, grid, last) for r in members])
        valid = ~np.isnan(curves).any(axis=0)  # grid steps where every seed has finished an episode
        if not valid.any():
            continue
        mean = curves[:, valid].mean(axis=0)
        label = f"{config} ({len(members)} seed{'s' if len(members) > 1 else ''})"
        ax.plot(grid[valid], mean, color=colour, lw=1.6, label=label)
        if len(members) >= 2 and valid.sum() > 1:
            result = stats.bootstrap((curves[:, valid],), np.mean, axis=0, vectorized=True, confidence_level=0.95,
                                     n_resamples=2_000, method="percentile", random_state=np.random.default_rng(0))
            low = np.where(np.isnan(result.confidence_interval.low), mean, result.confidence_interval.low)
            high = np.where(np.isnan(result.confidence_interval.high), mean, result.confidence_interval.high)
            ax.fill_between(grid[valid], low, high, color=colour, alpha=0.2, lw=0)
        reference = next((r.reference for r in runs if r.config == config and r.reference is not None), None)
        if reference is not None:
            ax.axhline(reference, color=colour, ls="--", lw=1.0, alpha=0.8, label=f"{config}: paper {fmt(reference)}")
        if config == "td3" and (paper := td3_paper_curve(env_id)) is not None:
            steps, paper_mean, paper_std = paper
            ax.plot(steps, paper_mean, color=colour, ls=":", lw=1.2, label="td3: paper's curve (mean +- std, 10 seeds)")
            ax.fill_between(steps, paper_mean - paper_std, paper_mean + paper_std, color=colour, alpha=0.08, lw=0)
    ax.set_title(env_id, fontsize=9 if small else 11)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.tick_params(labelsize=7 if small else 9)
    ax.grid(alpha=0.25, lw=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def plot_env(env_id: str, runs: list[RunResult], last: int, path: str, colours: dict) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=150)
    draw_env(ax, env_id, runs, last, colours)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"episodic return (last {last} episodes)")
    ax.legend(fontsize=7.5, frameon=False, loc="best")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def plot_overview(runs: list[RunResult], last: int, path: str, colours: dict) -> None:
    """Every env of the sweep side by side (at most 4 a row), one legend for all."""
    from matplotlib.lines import Line2D

    plt = pyplot()
    envs = sorted({r.env_id for r in runs}, key=lambda e: (registry.env_family(e), e))
    columns = min(4, len(envs))
    rows = math.ceil(len(envs) / columns)
    height = 2.5 * rows + 0.7  # inches; the bottom 0.7 hold the x label and the legend
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, height), dpi=150, squeeze=False)
    for ax, env_id in zip(axes.flat, envs):
        draw_env(ax, env_id, [r for r in runs if r.env_id == env_id], last, colours, small=True)
    for ax in list(axes.flat)[len(envs):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=c, lw=1.6, label=config) for config, c in colours.items()]
    handles.append(Line2D([], [], color="grey", ls="--", lw=1.0, label="paper"))
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(handles), 6),
               fontsize=8, frameon=False)
    fig.supylabel(f"return (last {last} episodes)", fontsize=9)
    fig.tight_layout(rect=(0, 0.62 / height, 1, 1))
    fig.text(0.5, 0.5 / height, "environment steps", ha="center", va="center", fontsize=9)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def main(root: str, out: str | None = None, last: int | None = None, plots: bool = True) -> str:
    """Write report.md, runs.csv and curves/<env>.png under out (default ROOT/report); return the Markdown.
    `last` defaults to the sweep's suite's number of final episodes (20 for most, 100 for PPO Table 6)."""
    suite_names = (read_json(os.path.join(root, "sweep.json")) or {}).get("suites", [])
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
    figures = {}
    if plots:
        os.makedirs(os.path.join(out, "curves"), exist_ok=True)
        colours = config_colours(runs)
        envs = sorted({r.env_id for r in runs})
        if len(envs) > 1:
            plot_overview(runs, last, os.path.join(out, "curves", "overview.png"), colours)
            figures["every env"] = os.path.join("curves", "overview.png")
        for env_id in envs:
            relative = os.path.join("curves", env_id.replace("/", "-") + ".png")
            plot_env(env_id, [r for r in runs if r.env_id == env_id], last, os.path.join(out, relative), colours)
            figures[env_id] = relative
    text = markdown(rows, group_iqms(runs, last), runs, last, suite_names, figures, root)
    for name, content in (("report.md", text), ("runs.csv", runs_csv(runs, last))):
        def write(tmp, content=content):
            with open(tmp, "w") as f:
                f.write(content)

        atomic_write(os.path.join(out, name), write)
    return text
