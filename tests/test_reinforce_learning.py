"""reinforce.py learns: a fixed seed, the script's defaults plus the baseline, a budget that fits CI
(about 15 seconds on one core here)."""

import dataclasses

import pytest

import reinforce
from helpers import mean_of_last_episodes

pytestmark = pytest.mark.learning


def test_reinforce_with_baseline_solves_cartpole():
    # The defaults with --baseline (Algorithm 13.4). Seeds 1, 2 and 3 first reached a 20-episode mean
    # of 400 after about 37k, 23k and 19k steps; at this budget their last 20 episodes average 495,
    # 500 and 494, and the evaluations 495, 500 and 500.
    args = dataclasses.replace(reinforce.Args(), env_id="CartPole-v1", baseline=True, seed=1,
                               total_timesteps=60_000, run_dir="run", eval_episodes=10)
    summary = reinforce.main(args)
    assert mean_of_last_episodes("run") >= 400
    assert summary["eval"]["mean_return"] >= 400
