"""td3.py learns: fixed seeds, the paper preset's settings (Table 3) with a short budget."""

import dataclasses

import pytest

import td3
from helpers import mean_of_last_episodes

pytestmark = pytest.mark.learning


def test_td3_swings_up_pendulum():
    # The paper preset as it is (its 1,000 random start steps included). Seed 1 first reached a 10-episode
    # mean of -250 after 7,200 steps and its last 10 episodes of 10,000 steps averaged -138 (about 100 s of
    # CPU time on a heavily loaded machine); seed 2: 7,600 steps, -219.
    args = dataclasses.replace(td3.PRESETS["paper"], env_id="Pendulum-v1", seed=1, total_timesteps=10_000,
                               eval_every=0, eval_episodes=0, run_dir="run")
    td3.main(args)
    assert mean_of_last_episodes("run", 10) >= -250


def test_td3_balances_inverted_pendulum():
    # The paper preset as it is, 15,000 steps. The bar is on the final noise-free evaluation (10 episodes),
    # which is what the paper reports; training episodes, with exploration noise of 0.3 force units, stay
    # much shorter (seed 2's last 10 averaged 152). Noise-free evaluations (10 episodes) per seed, paper
    # preset: seed 2: 1000 +- 0 at 15,000 steps (this test: about 153 s of CPU time, user+sys, on a heavily
    # loaded machine); seed 3: 157 at 12,500, 1000 at 15,000, 17,500 and 20,000; seed 4: 103 at 15,000, 1000
    # at 17,500 and 20,000; seed 1: still about 40 at 11,000 (not run further). 64-64 networks (seeds 1-3)
    # were at 48-71 at 15,000 steps, 256-256 (seeds 1, 2) at about 50 by 7,500-10,000.
    args = dataclasses.replace(td3.PRESETS["paper"], env_id="InvertedPendulum-v5", seed=2, total_timesteps=15_000,
                               eval_every=0, eval_episodes=10, run_dir="run")
    summary = td3.main(args)
    assert summary["eval"]["mean_return"] >= 900


def test_td3_swings_up_pendulum_with_bf16():
    # The same run with --bf16 (the update's products in bfloat16; not the paper's): seed 1's last 10
    # episodes of 10,000 steps averaged -137.9 (float32: -138), measured 2026-12-04.
    args = dataclasses.replace(td3.PRESETS["paper"], env_id="Pendulum-v1", seed=1, total_timesteps=10_000,
                               eval_every=0, eval_episodes=0, run_dir="run", bf16=True)
    td3.main(args)
    assert mean_of_last_episodes("run", 10) >= -250
