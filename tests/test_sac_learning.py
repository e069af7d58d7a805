"""sac.py learns: a fixed seed, the paper's settings except fewer random start steps (--learning-starts),
a budget that fits CI (about two minutes of one core on this heavily loaded machine)."""

import dataclasses

import pytest

import sac
from helpers import learns_with_one_of, mean_of_last_episodes

pytestmark = pytest.mark.learning


def test_sac_swings_up_pendulum():
    # The paper's settings with 1,000 random start steps instead of 10,000. Seeds 1, 2 and 3 first reached
    # a 10-episode mean of -250 after 5,800, 5,400 and 5,400 steps; at this budget their last 10 episodes
    # average -145, -161 and -193.
    args = dataclasses.replace(sac.Args(), env_id="Pendulum-v1", seed=1, learning_starts=1_000, total_timesteps=8_000,
                               eval_every=0, eval_episodes=0, run_dir="run")
    sac.main(args)
    assert mean_of_last_episodes("run", 10) >= -250


def test_sac_balances_inverted_pendulum():
    # The paper's settings with 1,000 random start steps, and the papers' measure: a noise-free evaluation
    # (the policy's mean action) over 10 episodes. At this budget the temperature is still high enough that
    # training episodes are short (last-10 means of 300-400), while the mean action balances. With a
    # 10-episode evaluation every 1,000 steps, seeds 1, 2 and 3 first evaluated at >= 900 after 11k, 14k
    # and 15k steps on the machine we tuned on; on a later machine seed 1 evaluated 1000 from 15k on and
    # seed 2 evaluated 176 at 15k and 1000 from 16k on. Hence 16k steps, seed 1, with seed 2 as the second
    # chance. About 4 minutes of one core a seed: the costliest learning test. Smaller networks learned
    # later (seed 1 with 64 units evaluated 100 at 16k; 128 units: seed 1 420, seed 2 1000), so the budget
    # stays. The periodic evaluations are left out here: they do not change the training (the same
    # episodes and final evaluation with and without them, checked on 3,000 steps) and only cost time.
    def train(seed):
        args = dataclasses.replace(sac.Args(), env_id="InvertedPendulum-v5", seed=seed, learning_starts=1_000,
                                   total_timesteps=16_000, eval_every=0, eval_episodes=10, threads=1,
                                   run_dir=f"run{seed}")
        summary = sac.main(args)
        assert summary["eval"]["deterministic"]
        return summary["eval"]["mean_return"]

    learns_with_one_of((1, 2), train, lambda mean_return: mean_return >= 900)
