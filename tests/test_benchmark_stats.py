"""The report's intervals on simulated experiments whose true mean is known: the Student-t interval of a
task's mean over seeds covers it 95% of the time at 5 seeds, where the percentile bootstrap the report used
before does not; the learning-curve bands are the same interval; the statistics across tasks (rliable's
stratified bootstrap) take the seeds every task has and give the same numbers every time."""

import math

import numpy as np
import pytest
import scipy.stats

from benchmark import results, stats

EXPERIMENTS = 2_000
TRUE_MEAN, SPREAD = 100.0, 30.0


def simulated_runs(seeds: int, rng) -> tuple[list, np.ndarray, np.ndarray]:
    """EXPERIMENTS experiments of `seeds` runs each, one config per experiment, every run's final return and
    eval drawn from a normal of mean TRUE_MEAN: the runs (as load_runs gives them) and the two
    [experiments x seeds] arrays of what was drawn."""
    finals = rng.normal(TRUE_MEAN, SPREAD, size=(EXPERIMENTS, seeds))
    evals = rng.normal(TRUE_MEAN, SPREAD, size=(EXPERIMENTS, seeds))
    runs = [results.RunResult(f"exp{i}-{seed}", f"exp{i:04d}", "CartPole-v1", seed, "", "finished",
                              steps=np.array([1000]), returns=np.array([finals[i, seed]]),
                              summary={"total_steps": 1000, "eval": {"mean_return": evals[i, seed]}})
            for i in range(EXPERIMENTS) for seed in range(seeds)]
    return runs, finals, evals


def coverage(intervals) -> float:
    """The share of (low, high) intervals that hold TRUE_MEAN."""
    return float(np.mean([low <= TRUE_MEAN <= high for low, high in intervals]))


def test_t_interval_covers_the_true_mean_at_5_seeds():
    """Through stats.aggregate, the report's own path: 2,000 experiments of 5 seeds, each row's 95% interval
    of the final return and of the eval. Measured (this RNG): 94.2% and 95.6%; at 3 seeds, 95.2% and 95.4%.
    The binomial noise of 2,000 experiments is 0.5 points, so 93% is 4 of those below 95%."""
    runs, finals, _ = simulated_runs(5, np.random.default_rng(0))
    rows = stats.aggregate(runs, last=20)
    assert len(rows) == EXPERIMENTS and all(r["final_seeds"] == r["eval_seeds"] == 5 for r in rows)
    by_config = {r["config"]: r for r in rows}
    assert by_config["exp0000"]["final_mean"] == pytest.approx(finals[0].mean())
    assert coverage(r["final_ci"] for r in rows) >= 0.93
    assert coverage(r["eval_ci"] for r in rows) >= 0.93


def test_percentile_bootstrap_fails_the_same_check():
    """The old interval, scipy's percentile bootstrap of the mean over seeds, on the same experiments:
    it is too narrow at few seeds (its spread is the seeds' own, with no allowance for estimating it).
    Measured (this RNG, 2,000 resamples): 83.8% at 5 seeds; at 3 seeds, 75.9%. So the check above can fail."""
    _, finals, _ = simulated_runs(5, np.random.default_rng(0))
    result = scipy.stats.bootstrap((finals,), np.mean, axis=-1, vectorized=True, n_resamples=2_000,
                                   method="percentile", random_state=np.random.default_rng(0))
    interval = result.confidence_interval
    assert coverage(zip(interval.low, interval.high)) < 0.90
    # The same experiments' Student-t intervals, for the contrast.
    assert coverage(stats.t_ci(values) for values in finals) >= 0.93


def test_curve_band_is_the_t_interval_at_each_step():
    rng = np.random.default_rng(3)
    curves = rng.normal(0.0, 1.0, size=(4, 6))
    curves[:, 2] = 7.0  # every seed equal at one step: the band is the mean itself
    low, high = stats.curve_ci(curves)
    for step in range(curves.shape[1]):
        assert (low[step], high[step]) == pytest.approx(stats.t_ci(curves[:, step]))
    assert low[2] == high[2] == 7.0


def mujoco_runs(seeds_per_task: dict, reference: float = 1000.0) -> list:
    """Finished ppo runs on MuJoCo tasks, run seed s of a task returning reference * (task number + s / 10)."""
    runs = []
    for t, (env_id, seeds) in enumerate(seeds_per_task.items()):
        for seed in seeds:
            final = reference * (t + seed / 10)
            runs.append(results.RunResult(f"ppo-{env_id}-{seed}", "ppo", env_id, seed, "", "finished",
                                          reference=reference, steps=np.array([1000]), returns=np.array([final]),
                                          summary={"total_steps": 1000}))
    return runs


def test_aggregates_across_tasks_take_the_common_seeds_and_are_reproducible():
    # Hopper has seeds 5, 1, 2, 4, 3 (in that order), Walker2d 1, 2, 3: rliable gets 3 seeds of each, the
    # first by seed number (Hopper's 1, 2, 3), 2 runs left out.
    runs = mujoco_runs({"Hopper-v5": (5, 1, 2, 4, 3), "Walker2d-v5": (1, 2, 3)})
    matrices = stats.score_matrices(runs, last=20)
    group = matrices[("ppo", "mujoco")]
    assert group["tasks"] == ["Hopper-v5", "Walker2d-v5"] and group["seeds"] == 3 and group["runs"] == 8
    np.testing.assert_allclose(group["matrix"], [[0.1, 1.1], [0.2, 1.2], [0.3, 1.3]])

    state = np.random.get_state()
    (row,) = stats.group_iqms(runs, last=20)
    assert np.array_equal(np.random.get_state()[1], state[1])  # numpy's global generator is put back
    assert (row["seeds"], row["runs"], row["left_out"], row["scale"]) == (3, 6, 2, "ours / paper")
    assert row["iqm"] == pytest.approx(scipy.stats.trim_mean([0.1, 0.2, 0.3, 1.1, 1.2, 1.3], 0.25))
    assert row["mean"] == pytest.approx(0.7) and row["median"] == pytest.approx(0.7)
    # Runs resampled within each task: the mean's interval lies within (0.1 + 1.1) / 2 and (0.3 + 1.3) / 2.
    assert 0.6 <= row["mean_ci"][0] < 0.7 < row["mean_ci"][1] <= 0.8
    for name in ("iqm", "mean", "median"):
        assert row[f"{name}_ci"][0] <= row[name] <= row[f"{name}_ci"][1]
    np.random.seed(12345)  # whatever state the global generator is in, the same intervals
    assert stats.group_iqms(runs, last=20) == [row]

    # One seed a task: the numbers, but no interval (every resample would be the sample).
    (single,) = stats.group_iqms(mujoco_runs({"Hopper-v5": (1,), "Walker2d-v5": (1, 2)}), last=20)
    assert single["seeds"] == 1 and single["mean"] == pytest.approx(0.6)
    assert all(math.isnan(x) for x in single["mean_ci"] + single["iqm_ci"] + single["median_ci"])


def test_performance_profile_is_the_fraction_of_runs_above_each_threshold():
    matrix = np.array([[0.1, 1.1], [0.2, 1.2], [0.3, 1.3]])
    taus = np.array([0.0, 0.15, 0.5, 1.25, 2.0])
    profiles, bands = stats.performance_profiles({"ppo": matrix}, taus)
    np.testing.assert_allclose(profiles["ppo"], [1.0, 5 / 6, 0.5, 1 / 6, 0.0])
    assert bands["ppo"].shape == (2, len(taus))
    assert np.all(bands["ppo"][0] <= profiles["ppo"] + 1e-12) and np.all(profiles["ppo"] <= bands["ppo"][1] + 1e-12)
    again = stats.performance_profiles({"ppo": matrix}, taus)[1]
    assert np.array_equal(again["ppo"], bands["ppo"])  # seeded
