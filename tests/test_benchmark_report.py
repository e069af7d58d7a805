"""The report on synthetic run directories whose numbers are known: final returns, means over seeds and
their Student-t intervals, the paper's number and ratio, human-normalised Atari scores and their IQM, the
seeds behind each interval, the CSV and the plots."""

import csv
import json
import math
import os

import numpy as np
import pytest
from scipy.stats import trim_mean

from benchmark import __main__ as cli
from benchmark import plots, report, results, stats, suites, tables


def make_run(root, name, algo, env_id, seed, early, final, eval_return=None, budget=500_000, last=20):
    """A run directory like a script writes: 30 early episodes returning `early`, then `last` returning `final`."""
    run_dir = root / "runs" / name
    run_dir.mkdir(parents=True)
    returns = [early] * 30 + [final] * last
    with open(run_dir / "episodes.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["global_step", "episodic_return", "episodic_length", "wall_time"])
        for i, value in enumerate(returns):
            writer.writerow([(i + 1) * 1000, value, 100, i])
    summary = {"algo": algo, "env_id": env_id, "seed": seed, "total_steps": len(returns) * 1000, "sps": 1000,
               "wall_time": 50.0, "args": {"env_id": env_id, "seed": seed, "total_timesteps": budget}}
    if eval_return is not None:
        summary["eval"] = {"episodes": 10, "deterministic": False, "mean_return": eval_return, "std_return": 1.0}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def test_final_returns_means_cis_and_ratio(tmp_path):
    for seed, final in zip((1, 2, 3), (100.0, 200.0, 300.0)):
        make_run(tmp_path, f"ppo-{seed}", "ppo", "CartPole-v1", seed, early=1000.0, final=final,
                 eval_return=10.0 * seed)
    runs = results.load_runs(str(tmp_path))
    assert [r.final(20) for r in runs] == [100.0, 200.0, 300.0]  # the early episodes are left out
    assert runs[0].final(40) == pytest.approx((20 * 1000 + 20 * 100) / 40)
    (row,) = stats.aggregate(runs, 20)
    assert row["final_mean"] == pytest.approx(200.0)
    # Three seeds 100 apart: s = 100, and the Student-t interval is 200 +- t_{0.975, 2} 100 / sqrt(3), t = 4.303.
    assert row["final_ci"] == pytest.approx((200.0 - 248.414, 200.0 + 248.414), abs=1e-3)
    assert row["final_seeds"] == 3 and row["eval_seeds"] == 3
    assert row["eval_mean"] == pytest.approx(20.0)
    assert row["eval_ci"] == pytest.approx((20.0 - 24.8414, 20.0 + 24.8414), abs=1e-4)  # of the evaluations
    # ppo on CartPole-v1 at 500k steps is a classic-suite entry: CleanRL's 490.
    assert row["reference"] == 490.0
    assert row["ratio"] == pytest.approx(200.0 / 490.0)
    assert row["finished"] == 3 and row["steps"] == 50_000


def test_ci_of_known_samples():
    """Worked by hand: the 95% Student-t interval of the mean is mean +- t_{0.975, n-1} s / sqrt(n), with
    t_{0.975, n-1} = 12.706, 4.303, 2.776, 2.262 at 2, 3, 5 and 10 seeds."""
    assert stats.t_ci([0.0, 2.0]) == pytest.approx((1.0 - 12.7062, 1.0 + 12.7062), abs=1e-4)  # s = sqrt(2)
    assert stats.t_ci([1.0, 2.0, 3.0]) == pytest.approx((2.0 - 2.48414, 2.0 + 2.48414), abs=1e-5)  # s = 1
    # 0 to 4: s = sqrt(10 / 4), so the half-width is t_{0.975, 4} sqrt(2.5) / sqrt(5) = 2.776 / sqrt(2).
    assert stats.t_ci([0.0, 1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.0 - 1.96324, 2.0 + 1.96324), abs=1e-5)
    # The same spread over more seeds: narrower, by sqrt(n) and by the smaller t quantile.
    widths = {n: np.diff(stats.t_ci([0.0, 1.0] * (n // 2)))[0] for n in (2, 4, 10, 40)}
    assert widths[2] > widths[4] > widths[10] > widths[40]
    assert widths[10] == pytest.approx(2 * 2.26216 * math.sqrt(10 / 36) / math.sqrt(10), abs=1e-5)
    # Returns moved and stretched: the interval moves and stretches with them.
    low, high = stats.t_ci([0.0, 1.0] * 5)
    assert stats.t_ci([5.0, 15.0] * 5) == pytest.approx((5 + 10 * low, 5 + 10 * high))

    rng = np.random.default_rng(1)
    for n in (3, 5, 10):
        values = rng.normal(50.0, 10.0, size=n)
        low, high = stats.t_ci(values)
        assert low < values.mean() < high
        assert (low + high) / 2 == pytest.approx(values.mean())  # symmetric about the mean
    assert stats.t_ci([5.0, 5.0, 5.0]) == (5.0, 5.0)  # identical seeds: a point
    assert all(math.isnan(x) for x in stats.t_ci([5.0]))
    assert all(math.isnan(x) for x in stats.t_ci([]))


def test_human_normalised_scores_and_iqm(tmp_path):
    # Breakout: random 1.7, human 30.5; Pong: random -20.7, human 14.6 (data/atari_random_human.csv).
    assert stats.human_normalised("BreakoutNoFrameskip-v4", 30.5) == pytest.approx(1.0)
    assert stats.human_normalised("ALE/Breakout-v5", 1.7) == pytest.approx(0.0)
    assert stats.human_normalised("PongNoFrameskip-v4", -3.05) == pytest.approx(0.5)
    assert stats.atari_game("UpNDownNoFrameskip-v4") == "up_n_down"
    assert stats.atari_game("MsPacmanNoFrameskip-v4") == "ms_pacman"
    assert stats.human_normalised("CartPole-v1", 100.0) is None
    assert stats.iqm([0, 1, 2, 3, 4, 5, 6, 100]) == pytest.approx(3.5)  # the middle half: 2, 3, 4, 5

    scores = {"BreakoutNoFrameskip-v4": (1.7, 30.5, 59.3), "PongNoFrameskip-v4": (-20.7, -3.05, 14.6)}
    for env_id, finals in scores.items():
        for seed, final in enumerate(finals, 1):
            make_run(tmp_path, f"a2c-{env_id}-{seed}", "a2c_atari", env_id, seed, early=0.0, final=final,
                     budget=10_000_000)
    runs = results.load_runs(str(tmp_path))
    rows = {r["env_id"]: r for r in stats.aggregate(runs, 20)}
    assert rows["BreakoutNoFrameskip-v4"]["hns"] == pytest.approx(1.0)  # of the mean score 30.5
    assert rows["PongNoFrameskip-v4"]["hns"] == pytest.approx(0.5)
    assert rows["BreakoutNoFrameskip-v4"]["reference"] == 303.0  # PPO's Table 6, A2C column
    (group,) = stats.group_iqms(runs, 20)
    per_run = [0.0, 1.0, 2.0, 0.0, 0.5, 1.0]
    assert group["iqm"] == pytest.approx(trim_mean(per_run, 0.25))
    assert group["mean"] == pytest.approx(0.75) and group["median"] == pytest.approx(0.75)
    for name in ("iqm", "mean", "median"):  # rliable's stratified bootstrap: runs resampled within each task
        assert group[f"{name}_ci"][0] <= group[name] <= group[f"{name}_ci"][1]
    # Resampling within tasks, the mean's interval lies between the means of each task's lowest and of
    # each task's highest runs (0.0 and 2.0, 0.5 and 1.0 ... 0 and 1 over Pong).
    assert 0.0 <= group["mean_ci"][0] < 0.75 < group["mean_ci"][1] <= 1.5
    assert group["tasks"] == 2 and group["seeds"] == 3 and group["runs"] == 6 and group["left_out"] == 0
    assert group["scale"] == "human-normalised"


def test_report_files(tmp_path):
    for seed, final in zip((1, 2), (400.0, 500.0)):
        make_run(tmp_path, f"ppo-{seed}", "ppo", "CartPole-v1", seed, early=20.0, final=final, eval_return=450.0)
    make_run(tmp_path, "td3-1", "td3", "Hopper-v5", 1, early=0.0, final=3564.07, budget=1_000_000)
    failed = tmp_path / "runs" / "a3c-1"
    failed.mkdir()
    (failed / "status.json").write_text(json.dumps({"name": "a3c-1", "config": "a3c_hogwild", "env_id": "CartPole-v1",
                                                    "seed": 1, "state": "failed", "returncode": 2}))
    assert cli.main(["report", str(tmp_path)]) == 0
    out = tmp_path / "report"
    text = (out / "report.md").read_text()
    # 50,000 steps against numbers measured at 500k and 1M steps: the budgets are shown beside them.
    # Two seeds 100 apart: 450 +- t_{0.975, 1} 70.7 / sqrt(2), t = 12.71 (an honest interval is wide).
    assert ("| `ppo` | CartPole-v1 | 50,000 | 2 | 450.0 [-185.3, 1,085] | 450.0 [450.0, 450.0] | 490.0 (at 500,000 "
            "steps) | 0.92 |" in text)
    # TD3's Table 1 is the maximum of an evaluation curve, which this run did not record: no ratio.
    assert "| `td3` | Hopper-v5 | 50,000 | 1 | 3,564 | - | 3,564 (at 1,000,000 steps) | - |" in text
    assert "`a3c-1`: failed" in text
    assert "Fujimoto et al. 2018, Addressing Function Approximation Error in Actor-Critic Methods, Table 1" in text
    assert "CleanRL ppo.py" in text
    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    by_name = {r["name"]: r for r in rows}
    assert float(by_name["ppo-2"]["final_return"]) == 500.0 and by_name["a3c-1"]["state"] == "failed"
    assert by_name["ppo-2"]["run_dir"] == os.path.join("runs", "ppo-2")  # relative: no folder of this machine
    assert "![every env](curves/overview.png)" in text  # two envs: one figure of both, then one each
    for env_id in ("overview", "CartPole-v1", "Hopper-v5"):
        png = out / "curves" / f"{env_id}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert env_id == "overview" or f"![{env_id}](curves/{env_id}.png)" in text
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_curve_is_the_running_mean_of_the_last_episodes():
    run = results.RunResult("r", "ppo", "CartPole-v1", 1, "", "finished", steps=np.array([10, 20, 30, 40]),
                           returns=np.array([1.0, 2.0, 3.0, 4.0]))
    values = stats.curve(run, np.array([5, 10, 25, 40, 100]), last=2)
    assert np.isnan(values[0])
    assert values[1:].tolist() == [1.0, 1.5, 3.5, 3.5]


def test_last_episodes_default_to_the_suites(tmp_path, capsys):
    """PPO's Table 6 averages the last 100 episodes, so a ppo-table6 sweep's report does too."""
    make_run(tmp_path, "ppo-1", "ppo", "PongNoFrameskip-v4", 1, early=-21.0, final=19.0, budget=10_000_000, last=50)
    (tmp_path / "sweep.json").write_text(json.dumps({"suites": ["ppo-table6"], "runs": []}))
    text = report.main(str(tmp_path), plots=False)
    assert "last 100 training episodes" in text
    expected = (30 * -21.0 + 50 * 19.0) / 80  # all 80 episodes: fewer than 100
    assert f"| {tables.fmt(expected)} |" in text
    assert float(list(csv.DictReader(open(tmp_path / "report" / "runs.csv")))[0]["final_return"]) == expected


def test_runs_the_sweep_listed_but_never_started_are_reported(tmp_path):
    make_run(tmp_path, "ppo__CartPole-v1__1", "ppo", "CartPole-v1", 1, early=10.0, final=100.0)
    listed = [{"name": f"ppo__CartPole-v1__{seed}", "config": "ppo", "env_id": "CartPole-v1", "seed": seed,
               "total_timesteps": 50_000, "reference": None, "source": ""} for seed in (1, 2)]
    (tmp_path / "sweep.json").write_text(json.dumps({"suites": [], "runs": listed}))
    text = report.main(str(tmp_path), plots=False)
    assert "| `ppo` | CartPole-v1 | 50,000 | 1/2 | 100.0 |" in text
    assert "- `ppo__CartPole-v1__2`: not started" in text


def test_report_says_the_seeds_behind_its_intervals(tmp_path, capsys):
    """Breakout with 5 seeds, Pong with 3: the table across tasks takes 3 of each and says so, a warning in
    report.md and on stderr names what rests on fewer than 5 seeds, each figure says what its band is, and
    the command prints where it wrote the report."""
    for env_id, seeds in (("BreakoutNoFrameskip-v4", 5), ("PongNoFrameskip-v4", 3)):
        for seed in range(1, seeds + 1):
            make_run(tmp_path, f"a2c-{env_id}-{seed}", "a2c_atari", env_id, seed, early=0.0, final=10.0 * seed,
                     budget=10_000_000)
    assert cli.main(["report", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    text = (tmp_path / "report" / "report.md").read_text()
    assert captured.out.strip() == text.strip()  # stdout: the Markdown; stderr: the warning and the path
    warning = ("Warning: fewer than 5 seeds behind `a2c_atari` PongNoFrameskip-v4 (3 seeds), `a2c_atari` across "
               "2 atari tasks (3 seeds a task)")
    assert f"**{warning}" in text
    err = captured.err.splitlines()
    assert err[0].startswith(warning) and "BreakoutNoFrameskip-v4" not in err[0]
    assert err[-1] == f"report: {tmp_path / 'report' / 'report.md'}"
    assert "| `a2c_atari` | 2 atari | 3 | 6 | human-normalised |" in text
    assert "each task's first 3 seeds (by seed number), leaving out 2 runs" in text
    assert "band: 95% Student-t interval of the mean over the seeds" in text
    assert "![performance profile: atari](curves/profile-atari.png)" in text
    assert (tmp_path / "report" / "curves" / "profile-atari.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_curves_name_each_reference_by_its_source():
    # The classic suite's references are other implementations' results, not a paper's.
    assert plots.short_source(suites.RL_ZOO) == "RL Baselines3 Zoo"
    assert plots.short_source(suites.CLEANRL_PPO) == "CleanRL ppo.py"
    assert plots.short_source(suites.PAAC_SOURCE) == "Clemente et al. 2017"
    assert plots.short_source("") == "paper"
