"""ppo.py learns: fixed seeds, the presets' settings, budgets that fit CI (under a minute each here)."""

import dataclasses

import pytest

import ppo
from helpers import mean_of_last_episodes

pytestmark = pytest.mark.learning


def test_ppo_solves_cartpole():
    # The classic preset (the paper's Table 3 settings). Seeds 1 and 2 first reached a 20-episode mean
    # of 450 after about 27k and 35k steps.
    args = dataclasses.replace(ppo.PRESETS["classic"], env_id="CartPole-v1", seed=1, total_timesteps=61_440,
                               run_dir="run", eval_episodes=10)
    summary = ppo.main(args)
    assert mean_of_last_episodes("run") >= 450
    assert summary["eval"]["mean_return"] >= 450


def test_ppo_solves_inverted_pendulum_continuous():
    # The mujoco preset (Table 3 with normalisation). Solved is gymnasium's reward threshold, 950 (of a
    # possible 1000). Seed 1 first reached a 20-episode mean of 950 after about 37k steps.
    args = dataclasses.replace(ppo.PRESETS["mujoco"], env_id="InvertedPendulum-v5", seed=1, total_timesteps=61_440,
                               run_dir="run", eval_episodes=10)
    summary = ppo.main(args)
    assert mean_of_last_episodes("run") >= 950
    assert summary["eval"]["mean_return"] >= 950
