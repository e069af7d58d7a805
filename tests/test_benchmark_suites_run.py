"""Suites run end to end with the real scripts at tiny budgets: the classic suite's PPO and REINFORCE runs
(then resumed from their checkpoints), the Atari suite (PPO Table 6, both scripts on Pong) and a MuJoCo
suite (TD3 Table 1's PPO on InvertedPendulum), each followed by its report. Only scripts that exist in
algos/ today are run."""

import json
import os

from benchmark import __main__ as cli
from benchmark import status


def run_suite(out, *argv):
    return cli.main(["run", *argv, "--seeds", "1", "--workers", "2", "--out", str(out)])


def test_classic_suite_at_tiny_budget_then_resumed(tmp_path, capsys):
    out = tmp_path / "classic"
    assert run_suite(out, "--suite", "classic", "--algo", "ppo", "reinforce", "--env", "CartPole-v1",
                     "--budget-scale", "0.01", "--set", "eval_episodes=2") == 0
    names = sorted(os.listdir(out / "runs"))
    assert names == ["ppo__CartPole-v1__1", "reinforce-baseline__CartPole-v1__1"]
    summaries = {n: json.loads((out / "runs" / n / "summary.json").read_text()) for n in names}
    assert summaries["ppo__CartPole-v1__1"]["total_steps"] == 4096  # 5,000 rounded down to whole batches
    assert summaries["reinforce-baseline__CartPole-v1__1"]["args"]["baseline"] is True
    assert summaries["ppo__CartPole-v1__1"]["args"]["threads"] == 1

    # Pretend both were interrupted after their last checkpoint: the rerun resumes them with the real scripts.
    for name in names:
        os.remove(out / "runs" / name / "summary.json")
        assert status.next_action(str(out / "runs" / name)) == "resume"
    assert run_suite(out, "--suite", "classic", "--algo", "ppo", "reinforce", "--env", "CartPole-v1",
                     "--budget-scale", "0.01", "--set", "eval_episodes=2") == 0
    for name in names:
        record = json.loads((out / "runs" / name / "status.json").read_text())
        assert (record["action"], record["state"], record["attempts"]) == ("resume", "finished", 2)

    capsys.readouterr()
    assert cli.main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| `ppo` | CartPole-v1 | 4,096 | 1 |" in text and "| 490.0 (at 500,000 steps) |" in text
    assert (out / "report" / "curves" / "CartPole-v1.png").exists()


def test_atari_and_mujoco_suites_at_tiny_budgets(tmp_path, capsys):
    atari = tmp_path / "atari"
    assert run_suite(atari, "--suite", "ppo-table6", "--env", "PongNoFrameskip-v4", "--budget-scale", "0.0002",
                     "--set", "eval_episodes=0") == 0
    ppo = json.loads((atari / "runs" / "ppo__PongNoFrameskip-v4__1" / "summary.json").read_text())
    a2c = json.loads((atari / "runs" / "a2c_atari__PongNoFrameskip-v4__1" / "summary.json").read_text())
    assert ppo["args"]["preset"] == "atari" and ppo["total_steps"] == 1024
    assert a2c["args"]["preset"] == "atari" and a2c["total_steps"] == 2000

    mujoco = tmp_path / "mujoco"
    assert run_suite(mujoco, "--suite", "td3-table1", "--algo", "ppo", "--env", "InvertedPendulum-v5",
                     "--budget-scale", "0.005", "--set", "eval_episodes=0") == 0
    summary = json.loads((mujoco / "runs" / "ppo__InvertedPendulum-v5__1" / "summary.json").read_text())
    assert summary["args"]["preset"] == "mujoco" and summary["total_steps"] == 4096

    for out in (atari, mujoco):
        assert cli.main(["report", str(out), "--no-plots"]) == 0
    text = capsys.readouterr().out
    assert "Schulman et al. 2017, Table 6" in text and "Fujimoto et al. 2018, Table 1" in text
