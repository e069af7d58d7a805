"""The report's statistics: per (config, env) the final return over seeds with a 95% bootstrap CI, beside the
paper's number; IQM over groups of tasks; human-normalised Atari scores; the learning curves and their bands.

Statistics are scipy's: `scipy.stats.bootstrap` (percentile intervals, 10,000 resamples, a fixed seed, so
a report is reproducible) for the mean over seeds and for the IQM, and `scipy.stats.trim_mean(x, 0.25)`
for the interquartile mean (Agarwal et al. 2021). The IQM's interval resamples runs, not runs within
tasks (rliable's stratified bootstrap), which makes it somewhat wider.

Per run, "final return" is the mean of the last N training episodes of episodes.csv (N = --last, 20 by
default) and "eval" is the final evaluation that summary.json records (its "eval" entry).
"""

import math
import re
from collections import defaultdict

import numpy as np
import scipy.stats

from benchmark import registry
from benchmark.results import RunResult, atari_scores

RESAMPLES = 10_000
CURVE_RESAMPLES = 2_000


def iqm(values) -> float:
    """Interquartile mean: the mean of the middle 50% (scipy's trim_mean cutting 25% at each end)."""
    return float(scipy.stats.trim_mean(np.asarray(values, dtype=float), 0.25))


def trimmed_mean(x, axis=0):
    return scipy.stats.trim_mean(x, 0.25, axis=axis)


def bootstrap_ci(values, statistic=np.mean) -> tuple[float, float]:
    """95% percentile bootstrap interval of statistic over values; (nan, nan) below two values, (v, v) when
    all are equal."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return math.nan, math.nan
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    result = scipy.stats.bootstrap((values,), lambda x, axis: statistic(x, axis=axis), confidence_level=0.95,
                                   n_resamples=RESAMPLES, method="percentile", random_state=np.random.default_rng(0))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


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
    table = atari_scores() if table is None else table
    if game not in table:
        return None
    random_score, human = table[game]
    return (score - random_score) / (human - random_score)


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
    """The 95% percentile bootstrap band of the mean over seeds (the rows of curves) at each step (its
    columns), 2,000 resamples with a fixed seed; the mean itself where the interval is undefined (every seed
    equal)."""
    result = scipy.stats.bootstrap((curves,), np.mean, axis=0, vectorized=True, confidence_level=0.95,
                                   n_resamples=CURVE_RESAMPLES, method="percentile",
                                   random_state=np.random.default_rng(0))
    mean = curves.mean(axis=0)
    low = np.where(np.isnan(result.confidence_interval.low), mean, result.confidence_interval.low)
    high = np.where(np.isnan(result.confidence_interval.high), mean, result.confidence_interval.high)
    return low, high
