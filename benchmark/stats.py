"""The report's statistics: per (config, env) the final return over seeds with a 95% interval, beside the
paper's number; IQM, mean and median over groups of tasks with their intervals, and performance profiles;
human-normalised Atari scores; the learning curves and their bands.

Per task (a config on one env), the mean over seeds of the final return and of the eval has a 95% Student-t
interval: mean +- t_{0.975, n-1} s / sqrt(n) over the n seeds (scipy.stats.t); none below two seeds, a
point when every seed is equal. Its coverage holds at the few seeds a sweep runs, where the percentile
bootstrap this report used before does not: in 2,000 simulated experiments on normal returns, the t
interval covered the true mean 95% of the time at 3 seeds and 94% at 5, the percentile bootstrap 76% and
84% (tests/test_benchmark_stats.py checks the 5-seed figures). It assumes the seeds' returns are roughly
normal, which few seeds cannot show: on skewed (lognormal, sigma 0.5) returns it covered 93% at 3 seeds
and 91% at 5. The report warns about intervals that rest on fewer than FEW_SEEDS seeds. The learning
curves' bands are the same interval at each step.

Across tasks (a config on the tasks of one env family, each run's score normalised: human-normalised on
Atari, else ours / paper), the statistics are rliable's (Agarwal et al. 2021): the interquartile mean of
all runs (`rliable.metrics.aggregate_iqm`, scipy's trim_mean cutting 25% at each end), the mean and the
median of the tasks' mean scores, each with a 95% stratified bootstrap interval (runs resampled within each
task, percentile, 2,000 resamples: `rliable.library.get_interval_estimates`), and the performance profile
(the fraction of runs scoring above each threshold, with the same kind of band:
`rliable.library.create_performance_profile`). rliable takes a [runs x tasks] matrix, so where the tasks
have different numbers of seeds it gets the common number, each task's first seeds by seed number, and
the report says how many runs that leaves out. At few seeds this interval too is narrower than 95%:
simulated (normal scores, 3 or 6 tasks), the mean's covered the true mean about 90% of the time at 5
seeds and 80-85% at 3, which the report's warning says. rliable 1.2 resamples with numpy's global
generator, whatever random_state it is given, so each call runs with that generator seeded with 0 (and
restored after): a report is reproducible.

Per run, "final return" is the mean of the last N training episodes of episodes.csv (N = --last, 20 by
default) and "eval" is the final evaluation that summary.json records (its "eval" entry).

The off-policy scripts (td3, sac, ddpg) also record in summary.json the evaluations of their noise-free
policy every --eval-every steps ("evaluations": [step, mean, std] rows), as the TD3 paper does (10 episodes
every 5,000 steps). Per task the report gives that paper's Table 1 measure, the maximum over training of the
seed-mean evaluation curve, with no interval (a maximum over steps of a mean is biased upwards, and the
t interval of a mean does not hold for it), and the seed-mean evaluation at the last step, with its
Student-t interval; both over the steps that every run with evaluations has.
"""

import contextlib
import functools
import math
import re
from collections import defaultdict

import numpy as np
import scipy.stats

from benchmark import registry
from benchmark.results import RunResult, atari_scores

RESAMPLES = 2_000  # rliable's stratified bootstrap, for the aggregates and the performance profiles
FEW_SEEDS = 5  # the report warns about an interval that rests on fewer seeds than this


def iqm(values) -> float:
    """Interquartile mean: the mean of the middle 50% (scipy's trim_mean cutting 25% at each end)."""
    return float(scipy.stats.trim_mean(np.asarray(values, dtype=float), 0.25))


@functools.lru_cache(maxsize=None)
def t_quantile(df: int) -> float:
    """t_{0.975, df}: the Student-t quantile of a two-sided 95% interval."""
    return float(scipy.stats.t.ppf(0.975, df))


def t_ci(values) -> tuple[float, float]:
    """95% Student-t interval of the mean of values: mean +- t_{0.975, n-1} s / sqrt(n), s the sample standard
    deviation; (nan, nan) below two values, (v, v) when all are equal."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return math.nan, math.nan
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    mean = values.mean()
    half = t_quantile(len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(mean - half), float(mean + half)


@contextlib.contextmanager
def numpy_global_seed(seed: int = 0):
    """Run the block with numpy's global generator seeded, and put its state back after: rliable 1.2's
    bootstrap draws from it (np.random.choice) and ignores the random_state it is given."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


# --------------------------------------------------------------------------------------------------
# Normalised scores
# --------------------------------------------------------------------------------------------------


def atari_game(env_id: str) -> str | None:
    """BreakoutNoFrameskip-v4, ALE/Breakout-v5 -> breakout; UpNDown -> up_n_down; None for other envs."""
    if registry.env_family(env_id) != "atari":
        return None
    name = env_id.removeprefix("ALE/").split("-v")[0].removesuffix("NoFrameskip").removesuffix("Deterministic")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def human_normalised(env_id: str, score: float, table: dict | None = None) -> float | None:
    """(score - random) / (human - random), or None for a game (or env) the table does not have."""
    game = atari_game(env_id)
    if game is None:
        return None
    table = atari_scores() if table is None else table
    if game not in table:
        return None
    random_score, human = table[game]
    return (score - random_score) / (human - random_score)


def normalised_score(run: RunResult, last: int) -> float | None:
    """A run's score on a scale shared by tasks: human-normalised on Atari, else ours / paper where the
    paper's number is positive, ours being the run's number of the paper's measure (its final return or its
    final evaluation); None when there is no such scale, and for the maximum of a seed-mean curve, which no
    single run has."""
    final = run.final(last)
    if math.isnan(final):
        return None
    if registry.env_family(run.env_id) == "atari":
        return human_normalised(run.env_id, final)
    ours = {"final": final, "eval": run.eval}.get(run.measure, math.nan)
    if run.reference and run.reference > 0 and not math.isnan(ours):
        return ours / run.reference
    return None


# --------------------------------------------------------------------------------------------------
# Aggregates
# --------------------------------------------------------------------------------------------------


def aggregate(runs: list[RunResult], last: int) -> list[dict]:
    """One row per (config, env) over its finished runs: mean and 95% Student-t interval of the final return
    and of the eval, the numbers of seeds behind each, the paper's number and the ratio ours / paper, ours
    being the mean of the paper's measure (the final return, the eval, or the maximum of the seed-mean
    evaluation curve: Entry.measure) and the ratio given only where the paper's number is positive (for
    negative returns a ratio reads backwards), the human-normalised score on Atari, and the statistics of the
    finished runs' evaluation curves (eval_curve_stats: "curve_max", "curve_max_step", "curve_last",
    "curve_last_ci", "curve_seeds"...)."""
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
               "final_mean": mean, "final_ci": t_ci(finals), "final_seeds": len(finals),
               "eval_mean": float(np.mean(evals)) if evals else math.nan, "eval_ci": t_ci(evals),
               "eval_seeds": len(evals), "reference": reference, "source": source,
               "measure": next((r.measure for r in members if r.reference is not None), "final"),
               "reference_steps": next((r.reference_steps for r in members if r.reference_steps), None)}
        hns = human_normalised(env_id, mean) if finals else None
        row["hns"] = math.nan if hns is None else hns
        row.update(eval_curve_stats(done))
        ours = {"final": mean, "eval": row["eval_mean"], "eval_max": row["curve_max"]}[row["measure"]]
        row["ratio"] = ours / reference if reference and reference > 0 and not math.isnan(ours) else math.nan
        rows.append(row)
    return sorted(rows, key=lambda r: (r["config"], registry.env_family(r["env_id"]), r["env_id"]))


def evaluations(run: RunResult) -> dict[int, float]:
    """step -> mean return of the evaluations that summary.json records ("evaluations", [step, mean, std]
    rows: the off-policy scripts'); empty without."""
    return {int(row[0]): float(row[1]) for row in (run.summary or {}).get("evaluations") or []}


def evaluation_curves(curves: list[dict[int, float]]) -> tuple[list[int], np.ndarray]:
    """Evaluation curves (step -> mean return, one per run of a task; empty ones left out) on the steps all
    of them have: (steps, [seeds x steps] mean returns); no steps where none has."""
    curves = [c for c in curves if c]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    return steps, np.array([[c[step] for step in steps] for c in curves])


def eval_curve_stats(runs: list[RunResult]) -> dict:
    """Over the runs (of one task) with evaluations, their seed-mean evaluation curve on the steps that all
    of them have: its maximum and the step of it (the TD3 paper's Table 1 measure; no interval), its value at
    the last of those steps with a 95% Student-t interval over the seeds, the number of seeds, and the
    interval between evaluations (the smallest gap between a run's evaluation steps, counting from 0).
    nan and None where no run has evaluations."""
    curves = [c for c in map(evaluations, runs) if c]
    steps, values = evaluation_curves(curves)
    if not steps:
        return {"curve_max": math.nan, "curve_max_step": None, "curve_last": math.nan,
                "curve_last_ci": (math.nan, math.nan), "curve_last_step": None, "curve_seeds": 0, "curve_every": None}
    mean = values.mean(axis=0)
    best = int(np.argmax(mean))
    return {"curve_max": float(mean[best]), "curve_max_step": steps[best], "curve_last": float(mean[-1]),
            "curve_last_ci": t_ci(values[:, -1]), "curve_last_step": steps[-1], "curve_seeds": len(curves),
            "curve_every": min(int(np.diff([0] + sorted(c)).min()) for c in curves)}


def score_matrices(runs: list[RunResult], last: int) -> dict:
    """Per (config, env family) with at least two tasks, every finished run of which has a normalised
    score: {"tasks": env ids, "matrix": [seeds x tasks] normalised scores, each task's first seeds by seed
    number, as many as the task with fewest has, "seeds": that number, "runs": the finished runs, used or
    not}. rliable's statistics take such a matrix."""
    groups = defaultdict(list)
    for run in runs:
        if run.state == "finished":
            groups[(run.config, registry.env_family(run.env_id))].append(run)
    matrices = {}
    for key, members in sorted(groups.items()):
        per_task = defaultdict(list)
        for run in sorted(members, key=lambda r: (r.env_id, r.seed)):
            per_task[run.env_id].append(normalised_score(run, last))
        if len(per_task) < 2 or any(s is None for scores in per_task.values() for s in scores):
            continue
        seeds = min(len(scores) for scores in per_task.values())
        tasks = sorted(per_task)
        matrix = np.array([per_task[task][:seeds] for task in tasks], dtype=float).T
        matrices[key] = {"tasks": tasks, "matrix": matrix, "seeds": seeds, "runs": len(members)}
    return matrices


def aggregate_metrics(matrix: np.ndarray) -> np.ndarray:
    """rliable's IQM (of all runs), mean and median (of the tasks' mean scores) of a [runs x tasks] matrix."""
    from rliable import metrics

    return np.array([metrics.aggregate_iqm(matrix), metrics.aggregate_mean(matrix), metrics.aggregate_median(matrix)])


def group_iqms(runs: list[RunResult], last: int) -> list[dict]:
    """Per config and env family with at least two tasks, when every run has a normalised score: IQM, mean
    and median of the normalised scores, each with a 95% stratified bootstrap interval (rliable), over the
    matrix of score_matrices; no interval below two seeds per task."""
    from rliable import library

    rows = []
    for (config, family), group in score_matrices(runs, last).items():
        matrix = group["matrix"]
        points, low, high = aggregate_metrics(matrix), np.full(3, math.nan), np.full(3, math.nan)
        if group["seeds"] >= 2:  # with one run per task every resample would be the sample itself
            with numpy_global_seed(0):
                _, intervals = library.get_interval_estimates({config: matrix}, aggregate_metrics, reps=RESAMPLES)
            low, high = intervals[config]
        row = {"config": config, "family": family, "tasks": len(group["tasks"]), "seeds": group["seeds"],
               "runs": matrix.size, "left_out": group["runs"] - matrix.size,
               "scale": "human-normalised" if family == "atari" else "ours / paper"}
        for i, name in enumerate(("iqm", "mean", "median")):
            row[name] = float(points[i])
            row[f"{name}_ci"] = (float(low[i]), float(high[i]))
        rows.append(row)
    return rows


def performance_profiles(matrices: dict, taus: np.ndarray) -> tuple[dict, dict]:
    """rliable's performance profiles of {name: [runs x tasks] matrix}: the fraction of runs scoring above
    each tau, and its 95% stratified bootstrap band ([2 x taus]), 2,000 resamples, seeded."""
    from rliable import library

    def fraction_above(scores, taus):  # rliable's score distribution, vectorised over tau
        return (scores.reshape(-1)[:, None] > np.asarray(taus)[None, :]).mean(axis=0)

    with numpy_global_seed(0):
        return library.create_performance_profile(matrices, taus, custom_profile_func=fraction_above,
                                                  reps=RESAMPLES)


# --------------------------------------------------------------------------------------------------
# Learning curves
# --------------------------------------------------------------------------------------------------


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


def curve_ci(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 95% Student-t band of the mean over seeds (the rows of curves, at least two) at each step (its
    columns): mean +- t_{0.975, n-1} s / sqrt(n); the mean itself where every seed is equal."""
    n = curves.shape[0]
    mean = curves.mean(axis=0)
    half = t_quantile(n - 1) * curves.std(axis=0, ddof=1) / math.sqrt(n)
    return mean - half, mean + half
