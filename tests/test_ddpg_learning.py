"""ddpg.py learns: a fixed seed, the TD3 paper's tuned DDPG (the our-ddpg preset) with a short budget. The
paper preset (tau 0.001, actor step 1e-4, weight decay) learns too slowly for CI's budget: seed 1 was still
near -1,300 after 8,000 Pendulum steps."""

import dataclasses

import pytest

import ddpg
from helpers import mean_of_last_episodes

pytestmark = pytest.mark.learning


def test_ddpg_swings_up_pendulum():
    args = dataclasses.replace(ddpg.PRESETS["our-ddpg"], env_id="Pendulum-v1", seed=1, total_timesteps=10_000,
                               eval_every=0, eval_episodes=0, run_dir="run")
    ddpg.main(args)
    assert mean_of_last_episodes("run", 10) >= -250
