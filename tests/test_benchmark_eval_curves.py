"""The TD3 paper's own measure in the report, on synthetic runs whose numbers are worked by hand: the
maximum over training of the seed-mean evaluation curve (its Table 1) and the seed-mean evaluation at the
last step, over the steps every run with evaluations has; the report's column and runs.csv's eval_max."""

import csv
import dataclasses
import io
import math

import numpy as np
import pytest

from benchmark import plots, results, stats, suites, tables


def run(name, config, env_id, seed, evaluations=None, state="finished"):
    """A run whose 20 training episodes return 10.0, with summary.json's "evaluations" ([step, mean, std]
    rows) when given."""
    summary = None
    if state == "finished":
        summary = {"total_steps": 15_000, "eval": {"mean_return": 10.0}}
        if evaluations is not None:
            summary["evaluations"] = [[step, mean, 1.0] for step, mean in evaluations]
    return results.RunResult(name, config, env_id, seed, "", state, steps=np.arange(1, 21) * 750,
                             returns=np.full(20, 10.0), summary=summary)


# Seed 1 peaks at 10,000 steps, seed 2 at 5,000: the seed-mean curve is [275, 400, 200], whose maximum, 400 at
# 10,000 steps, is not the mean of the seeds' own maxima, (500 + 450) / 2 = 475.
SEED_1 = [(5_000, 100.0), (10_000, 500.0), (15_000, 150.0)]
SEED_2 = [(5_000, 450.0), (10_000, 300.0), (15_000, 250.0)]


def test_max_of_the_seed_mean_curve_and_its_last_step():
    runs = [run("td3-1", "td3", "Hopper-v5", 1, SEED_1), run("td3-2", "td3", "Hopper-v5", 2, SEED_2)]
    row = stats.eval_curve_stats(runs)
    assert row["curve_max"] == pytest.approx(400.0) and row["curve_max_step"] == 10_000
    assert row["curve_last"] == pytest.approx(200.0) and row["curve_last_step"] == 15_000
    # 150 and 250 at the last step: s = 50 sqrt(2), so 200 +- t_{0.975, 1} 50 sqrt(2) / sqrt(2), t = 12.7062.
    assert row["curve_last_ci"] == pytest.approx((200.0 - 635.31, 200.0 + 635.31), abs=0.01)
    assert row["curve_seeds"] == 2 and row["curve_every"] == 5_000


def test_steps_a_run_lacks_are_left_out():
    """A third seed with no evaluation at 10,000 steps: the curve is over 5,000 and 15,000 only."""
    runs = [run("td3-1", "td3", "Hopper-v5", 1, SEED_1), run("td3-2", "td3", "Hopper-v5", 2, SEED_2),
            run("td3-3", "td3", "Hopper-v5", 3, [(5_000, 600.0), (15_000, 100.0)])]
    row = stats.eval_curve_stats(runs)
    # (100 + 450 + 600) / 3 = 383.33 at 5,000; (150 + 250 + 100) / 3 = 166.67 at 15,000.
    assert row["curve_max"] == pytest.approx(1150.0 / 3) and row["curve_max_step"] == 5_000
    assert row["curve_last"] == pytest.approx(500.0 / 3) and row["curve_last_step"] == 15_000
    # s of 150, 250, 100 = sqrt(5833.3) = 76.376; half-width t_{0.975, 2} s / sqrt(3) = 4.3027 * 44.096 = 189.73.
    assert row["curve_last_ci"] == pytest.approx((500.0 / 3 - 189.73, 500.0 / 3 + 189.73), abs=0.01)
    assert row["curve_seeds"] == 3 and row["curve_every"] == 5_000


def test_report_column_and_csv():
    runs = [run("td3-1", "td3", "Hopper-v5", 1, SEED_1), run("td3-2", "td3", "Hopper-v5", 2, SEED_2),
            run("td3-3", "td3", "Hopper-v5", 3),  # finished without evaluations: left out of the curve
            run("td3-4", "td3", "Hopper-v5", 4, state="failed"),
            run("ppo-1", "ppo", "CartPole-v1", 1)]  # an on-policy script: no evaluations
    rows = {r["config"]: r for r in stats.aggregate(runs, last=20)}
    assert rows["td3"]["curve_max"] == pytest.approx(400.0) and rows["td3"]["curve_seeds"] == 2
    assert math.isnan(rows["ppo"]["curve_max"]) and rows["ppo"]["curve_max_step"] is None
    assert rows["ppo"]["curve_seeds"] == 0

    text = tables.markdown(list(rows.values()), [], runs, 20, [], {})
    assert ("eval max: the maximum over training of the seed-mean noise-free evaluation curve (evaluations every "
            "5,000 steps), the TD3 paper's Table 1 measure; no interval.") in text
    assert "| HNS |" not in text and "| ratio | eval max (step) |" in text
    assert "| `ppo` | CartPole-v1 | 15,000 | 1 | 10.0 | 10.0 | - | - | - |" in text
    # Three of four finished, two of them with evaluations: the cell says how many seeds are behind it.
    (line,) = [line for line in text.splitlines() if line.startswith("| `td3`")]
    assert line.startswith("| `td3` | Hopper-v5 | 15,000 | 3/4 |") and line.endswith("| 400.0 (10,000; 2 seeds) |")

    table = list(csv.DictReader(io.StringIO(tables.runs_csv(runs, 20))))
    assert list(table[0]) == ["name", "config", "algo", "env_id", "seed", "state", "total_timesteps", "total_steps",
                              "episodes", "final_return", "eval_return", "hns", "reference", "sps", "wall_time",
                              "run_dir", "eval_max"]
    assert [r["eval_max"] for r in table] == ["500.0", "450.0", "", "", ""]  # each run's own curve's maximum


def test_no_column_without_evaluations():
    runs = [run("ppo-1", "ppo", "CartPole-v1", 1), run("ppo-2", "ppo", "CartPole-v1", 2)]
    text = tables.markdown(stats.aggregate(runs, last=20), [], runs, 20, [], {})
    assert "eval max" not in text
    assert text.splitlines()[-1] == ("| `ppo` | CartPole-v1 | 15,000 | 2 | 10.0 [10.0, 10.0] | 10.0 [10.0, 10.0] | - "
                                     "| - |")


@pytest.mark.parametrize("measure, ratio, run_scores, cell", [
    ("final", 10.0 / 800, [10.0 / 800] * 2, "| 0.01 |"),  # the last 20 training episodes, 10.0 in every run
    ("eval", 40.0 / 800, [40.0 / 800] * 2, "| 0.05 (eval) |"),  # the final evaluations, 40.0 in both runs
    ("eval_max", 400.0 / 800, [None, None], "| 0.50 (eval max) |"),  # the seed-mean curve's maximum, 400
])
def test_the_ratio_is_of_the_measure_the_papers_number_is(measure, ratio, run_scores, cell):
    """Ours / paper takes our number of the paper's measure; a run's own normalised score (for the statistics
    across tasks) too, except for a seed-mean curve's maximum, which no single run has."""
    runs = [dataclasses.replace(run(f"td3-{seed}", "td3", "Hopper-v5", seed, curve), reference=800.0,
                                measure=measure)
            for seed, curve in ((1, SEED_1), (2, SEED_2))]
    for r in runs:
        r.summary["eval"]["mean_return"] = 40.0
    (row,) = stats.aggregate(runs, last=20)
    assert row["ratio"] == pytest.approx(ratio)
    assert [stats.normalised_score(r, 20) for r in runs] == pytest.approx(run_scores)
    (line,) = [line for line in tables.markdown([row], [], runs, 20, [], {}).splitlines() if line.startswith("| `td3`")]
    assert cell in line


def test_the_td3_suites_compare_evaluations():
    """TD3's curves are evaluations (mujoco-short's td3 at 100k: the final one) and its Table 1 their
    maximum; CleanRL's ppo numbers are training returns."""
    measures = {(s, e.config, e.env_id): e.measure for s in ("mujoco-short", "td3-table1", "classic")
                for e in suites.SUITES[s].entries}
    assert measures["mujoco-short", "td3", "Hopper-v5"] == "eval"
    assert measures["mujoco-short", "ppo", "Hopper-v5"] == measures["td3-table1", "sac", "Ant-v5"] == "eval_max"
    assert measures["classic", "ppo", "CartPole-v1"] == "final"


def test_a_sweep_recorded_before_runs_carried_their_measure_takes_its_suite_entrys():
    old = {"config": "td3", "env_id": "Hopper-v5", "reference": 659.45, "reference_steps": 100_000}
    assert results.reference_measure(old) == "eval"  # mujoco-short's td3 entry
    assert results.reference_measure({**old, "reference": 1.0}) == "final"  # not that entry's number
    assert results.reference_measure({**old, "reference_steps": None}) == "final"


def test_evaluation_figures_carry_the_references_that_are_evaluations(tmp_path):
    """The TD3 paper's numbers and curve are evaluations: they go on the evaluation figure, beside our
    evaluation curves, not on the training-return one; a reference of final training returns stays there."""
    td3 = [dataclasses.replace(run(f"td3-{seed}", "td3", "Hopper-v5", seed, curve), reference=659.45,
                               source="Fujimoto et al. 2018, curves", measure="eval")
           for seed, curve in ((1, SEED_1), (2, SEED_2))]
    ppo = [dataclasses.replace(run("ppo-1", "ppo", "Hopper-v5", 1), reference=5.0, source="CleanRL ppo.py")]
    figures = plots.plot_curves(td3 + ppo, 20, str(tmp_path))
    assert figures == {"Hopper-v5": "curves/Hopper-v5.png", "Hopper-v5, evaluations": "curves/Hopper-v5-eval.png"}
    assert (tmp_path / "curves" / "Hopper-v5-eval.png").exists()

    labels = {}
    for evaluated in (False, True):
        fig, ax = plots.pyplot().subplots()
        seeds = plots.draw_env(ax, "Hopper-v5", td3 + ppo, 20, plots.config_colours(td3 + ppo), evaluated=evaluated)
        labels[evaluated] = [line.get_label() for line in ax.get_lines()]
        plots.pyplot().close(fig)
        assert seeds == [2]  # td3's two seeds make a band either way; ppo's one seed none
    assert labels[False] == ["ppo (1 seed)", "ppo: CleanRL ppo.py 5.00", "td3 (2 seeds)"]
    assert labels[True] == ["td3 (2 seeds)", "td3: Fujimoto et al. 2018 659.5",
                            "td3: paper's curve (mean +- std, 10 seeds)"]
    fig, ax = plots.pyplot().subplots()
    plots.draw_env(ax, "Hopper-v5", td3, 20, plots.config_colours(td3), evaluated=True)
    (mean,) = [line for line in ax.get_lines() if line.get_label() == "td3 (2 seeds)"]
    assert list(mean.get_xdata()) == [5_000, 10_000, 15_000] and list(mean.get_ydata()) == [275.0, 400.0, 200.0]
    plots.pyplot().close(fig)
