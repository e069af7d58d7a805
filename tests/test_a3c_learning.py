"""a3c_hogwild.py learns CartPole-v1 with 2 workers (one per core of CI's machine). Hogwild's lock-free
updates interleave differently on every run, so a seed does not repeat exactly: the bars were chosen to hold
on several seeds. CPU time figures are user time over all processes, measured on a heavily shared 2-core
machine (an idle one needs less)."""

import dataclasses

import pytest

import a3c_hogwild as a3c
from helpers import mean_of_last_episodes

pytestmark = pytest.mark.learning


def test_a3c_solves_cartpole_with_two_workers():
    # The classic preset. Seeds 1, 2 and 3 first reached a 20-episode mean of 450 after about 34k, 69k
    # and 47k steps and ended (lr annealed to 0) at 500, 500 and 500; about 100 CPU-seconds each.
    args = dataclasses.replace(a3c.PRESETS["classic"], env_id="CartPole-v1", seed=1, num_workers=2,
                               total_timesteps=100_000, run_dir="run", eval_episodes=0)
    a3c.main(args)
    assert mean_of_last_episodes("run") >= 450


@pytest.mark.skip(reason="not reliable yet: with these settings seeds 1, 2 and 3 ended at 398, 16 and 76 "
                         "(20-episode means after 100k steps); the recurrent agent needs tuning")
def test_a3c_lstm_learns_cartpole_with_two_workers():
    # The recurrent agent (a 64-unit tanh layer, then a 64-unit LSTM instead of the paper's 256, for CI's
    # budget) with the entropy bonus of the paper, beta 0.01. Seed 1 with lr 5e-4 instead of 1e-3 was
    # still near 20 after 100k steps; with beta 0 and 256 units it was at 9 (one action only) after 8k,
    # when it was stopped. Seed 1 first reached a 20-episode mean of 200 after about 55k
    # steps and ended at 398; about 140 CPU-seconds. But seeds 2 and 3 ended at 16 (one action only) and 76
    # (best 20-episode means 32 and 104), so no bar above chance holds on several seeds: skipped until tuned.
    args = dataclasses.replace(a3c.PRESETS["classic"], env_id="CartPole-v1", seed=1, num_workers=2,
                               total_timesteps=100_000, lstm=True, lstm_size=64, ent_coef=0.01,
                               run_dir="run", eval_episodes=0)
    a3c.main(args)
    assert mean_of_last_episodes("run") >= 200
