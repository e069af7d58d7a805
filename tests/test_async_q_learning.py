"""async_q.py learns: each method on CartPole-v1 with 2 workers and the classic preset, a fixed seed,
100k steps (under a minute of CPU each, two workers included). Hogwild updates race, so a seed does not
repeat exactly: the bar sits well below what every run tried reached."""

import dataclasses

import pytest

import async_q as aq
from helpers import best_mean_of_episodes, learns_with_one_of

pytestmark = pytest.mark.learning


@pytest.mark.parametrize("method", ["one-step-q", "one-step-sarsa", "n-step-q"])
def test_each_method_learns_cartpole(method):
    # Random play averages about 22. Q-learning without replay is unsteady, so the bar is on the best
    # 20-episode mean of the run rather than its last one. Seeds 1, 2, 3 (2 workers, 100k steps, lr
    # annealed to 0) reached best means of 339, 295, 247 (one-step Q), 237, 306, 247 (one-step SARSA) and
    # 353, 296, 244 (n-step Q), first passing 150 between 23k and 40k steps; seed 1 twice more: 256, 269,
    # 265 and 247, 242, 321. Their last 20-episode means were lower and scattered: 202, 126, 218; 133,
    # 217, 190; 353, 296, 197; seed 1 again 243, 101, >= 100 (not kept) and 143, 160, 317.
    # In a full CI run on 2026-12-04 (loaded machine) one-step SARSA's seed 1 reached only 187.9: the
    # races make a seed unrepeatable, so a run that falls short gets a second seed, and the test fails only
    # when two runs in a row do.
    def best_window(seed):
        args = dataclasses.replace(aq.PRESETS["classic"], method=method, seed=seed, num_workers=2,
                                   total_timesteps=100_000, run_dir=f"run{seed}", eval_episodes=0)
        aq.main(args)
        return best_mean_of_episodes(f"run{seed}", 20)

    learns_with_one_of((1, 2), best_window, lambda best: best >= 200)
