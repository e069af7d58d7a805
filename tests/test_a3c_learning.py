"""a3c_hogwild.py learns CartPole-v1 with 2 workers (one per core of CI's machine). Hogwild's lock-free
updates interleave differently on every run, so a seed does not repeat exactly: the bars were chosen to hold
on several seeds. CPU time figures are user time over all processes, measured on a heavily shared 2-core
machine (an idle one needs less)."""

import dataclasses

import pytest

import a3c_hogwild as a3c
from helpers import best_mean_of_episodes, learns_with_one_of, mean_of_last_episodes

pytestmark = pytest.mark.learning


def test_a3c_solves_cartpole_with_two_workers():
    # The classic preset. Hogwild runs do not repeat, so the bar was set from the spread of 20 runs (seeds
    # 1-20, 2 workers, 100k steps, on a 2-core machine shared with other test processes): every run's best
    # 20-episode mean was at least 490 (18 at 500), first reaching 450 after 17k-50k steps; but 3 of the 20
    # fell back late (last-20 means 209, 176 and 348), so a bar on the last 20 episodes failed about one run
    # in seven. The bar is on the best window, and a run that falls short gets up to two more seeds: with no
    # failure in 20 runs, three in a row fail with a probability well under 1 in 100. Since then, seed 1
    # fell short in two full-suite runs on the loaded machine (best windows 416 and 310; seed 2 passed at 500
    # both times): about one run in eleven, so the second seed is often used; three failing in a row stays
    # near 1 in 1,000. Random play averages
    # about 22. Against broken algorithms, measured on seeds 1-3: with the policy gradient's sign flipped
    # the best windows were 22, 14 and 24 (fails); with the advantage not detached from V (the policy loss
    # also trains the critic) all three reached 500, so this test cannot see that change, and
    # tests/test_a3c_math.py catches it instead.
    def best_window(seed):
        args = dataclasses.replace(a3c.PRESETS["classic"], env_id="CartPole-v1", seed=seed, num_workers=2,
                                   total_timesteps=100_000, run_dir=f"run{seed}", eval_episodes=0)
        a3c.main(args)
        return best_mean_of_episodes(f"run{seed}", 20)

    learns_with_one_of((1, 2, 3), best_window, lambda best: best >= 450)


def test_a3c_lstm_learns_cartpole_with_two_workers():
    # The recurrent agent (a 64-unit tanh layer, then a 64-unit LSTM instead of the paper's 256, for CI's
    # budget) with the paper's entropy bonus, beta 0.01, and the value loss weighted 0.25 instead of 0.5
    # (here the LSTM feeds both heads; the likely reason is that the value error of returns near 100
    # otherwise dominates the shared weights' RMSProp statistics). With vf_coef 0.5, seeds 1, 2 and 3
    # ended at 398, 16 (one action only) and 76. With 0.25, seeds 1, 2 and 3 first reached a 20-episode
    # mean of 200 after about 65k, 51k and 46k steps and ended (lr annealed to 0) at 173, 259 and 440
    # (best means 283, 479 and 440); about 130 CPU-seconds each; this test (seed 3) passed again on a
    # rerun; seed 5 reached 200 after 48k and ended at 481. But seed 4 never learned (best 20-episode
    # mean 39, end 20). Hogwild runs do not repeat, so a fixed seed cannot rule out such a run: the test
    # gives seed 5 a second run when seed 3 falls short, and passes when either reaches the bar (both
    # failing, at 1 in 5 each, would be about 1 in 25). Tried and dropped, one seed each, stopped early:
    # t_max 20 with RMSProp or Adam (lr 1e-3), near 50 after 60k steps; Adam with t_max 5, near 20 (one
    # action) up to 46k. The bar, 100, is well above chance (about 22) and below the weakest learning
    # seed's end.
    means = []
    for seed in (3, 5):
        args = dataclasses.replace(a3c.PRESETS["classic"], env_id="CartPole-v1", seed=seed, num_workers=2,
                                   total_timesteps=100_000, lstm=True, lstm_size=64, ent_coef=0.01, vf_coef=0.25,
                                   run_dir=f"run{seed}", eval_episodes=0)
        a3c.main(args)
        means.append(mean_of_last_episodes(f"run{seed}"))
        if means[-1] >= 100:
            break
    assert max(means) >= 100, f"last-20 means of seeds 3 and 5: {means}"
