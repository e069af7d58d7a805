"""The evaluation curve of ppo.py and trpo.py (--eval-every, in the gae kit they share): the TD3 paper's Table 1
measure, which compares them with TD3, is the maximum over training of the seed-mean curve (every 5,000 steps,
10 episodes). An on-policy update takes a whole batch, so each evaluation comes at the end of the first batch
at or past a multiple of --eval-every. The curve must not change training: its actions are sampled in a fork
of torch's random numbers, and its env is its own."""

import dataclasses
import math
import os

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import ppo
import trpo
from helpers import returns_of, run_cli

SCRIPTS = {"ppo": ppo, "trpo": trpo}


def tiny(module, run_dir: str = "run", **overrides):
    """Batches of 2 envs x 64 steps = 128, over 1,024 steps, one evaluation episode."""
    settings = dict(env_id="CartPole-v1", total_timesteps=1024, num_envs=2, num_steps=64, eval_episodes=1,
                    run_dir=run_dir, normalize_obs=False)
    if module is ppo:
        settings.update(minibatch_size=64, update_epochs=1)
    settings.update(overrides)
    return dataclasses.replace(module.PRESETS["classic"], **settings)


@pytest.mark.parametrize("name", SCRIPTS)
@pytest.mark.parametrize("eval_every, steps", [
    (256, [256, 512, 768, 1024]),  # multiples of the batch: at them
    (300, [384, 640, 1024]),  # 300, 600 and 900 fall inside batches: at the ends of those batches
    (100, [128, 256, 384, 512, 640, 768, 896, 1024]),  # less than a batch: after every batch
])
def test_the_curve_is_at_the_first_batch_end_past_each_multiple(name, eval_every, steps):
    summary = SCRIPTS[name].main(tiny(SCRIPTS[name], eval_every=eval_every))
    assert [step for step, _, _ in summary["evaluations"]] == steps  # [step, mean, std]
    assert all(math.isfinite(mean) and mean > 0 and std == 0 for _, mean, std in summary["evaluations"])
    events = EventAccumulator("run").Reload()
    assert [e.step for e in events.Scalars("eval/mean_return")] == steps + [1024]  # the last: the final one
    assert [e.value for e in events.Scalars("eval/mean_return")][:-1] == pytest.approx(
        [mean for _, mean, _ in summary["evaluations"]])
    # At the last step the curve's evaluation is the final one: same policy, env seed and random numbers.
    if steps[-1] == 1024:
        assert summary["evaluations"][-1][1] == summary["eval"]["mean_return"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_no_curve_by_default_or_without_evaluation_episodes(name):
    module = SCRIPTS[name]
    assert module.Args().eval_every == 0 and all(args.eval_every == 0 for args in module.PRESETS.values())
    assert module.main(tiny(module, run_dir="a"))["evaluations"] == []
    # As in td3: no evaluation episodes, no curve (and no final evaluation).
    summary = module.main(tiny(module, run_dir="b", eval_every=256, eval_episodes=0))
    assert summary["evaluations"] == [] and "eval" not in summary


@pytest.mark.parametrize("name", SCRIPTS)
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])  # sampled by Gumbel-max, and by a Gaussian
def test_the_curve_leaves_training_as_it_was(name, env_id):
    module = SCRIPTS[name]
    without = module.main(tiny(module, run_dir="without", env_id=env_id, eval_episodes=2))
    with_curve = module.main(tiny(module, run_dir="with", env_id=env_id, eval_episodes=2, eval_every=128))
    assert len(with_curve["evaluations"]) == 8
    assert len(returns_of("without")) > 0 and returns_of("with") == returns_of("without")
    assert with_curve["eval"] == without["eval"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_resumed_run_keeps_its_curve(name, monkeypatch):
    module = SCRIPTS[name]
    real_update = module.update

    def killed_after_the_checkpoint(*args, **kwargs):
        if os.path.exists("run/checkpoint.pt"):
            raise KeyboardInterrupt  # a kill: nothing past the checkpoint at step 512 is saved
        return real_update(*args, **kwargs)

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(module, "update", killed_after_the_checkpoint)
        module.main(tiny(module, eval_every=256, checkpoint_every=512))
    saved = torch.load("run/checkpoint.pt", weights_only=True)
    assert saved["global_step"] == 512 and [step for step, _, _ in saved["evaluations"]] == [256, 512]
    summary = module.main(dataclasses.replace(module.Args(), resume="run"))
    assert [step for step, _, _ in summary["evaluations"]] == [256, 512, 768, 1024]
    assert summary["evaluations"][:2] == saved["evaluations"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_negative_eval_every_is_refused_in_one_line(name):
    out = run_cli(name, "classic", "--eval-every", "-5000", "--run-dir", "run")
    assert out.returncode == 1
    assert out.stderr == f"{name}.py: error: --eval-every must be non-negative, got -5000\n"
    assert not os.path.exists("run")
