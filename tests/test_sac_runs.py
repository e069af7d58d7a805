"""sac.py end to end with tiny budgets: real MuJoCo, the periodic evaluation, the fixed temperature, and the
refusal of bad input. The run contract shared by every script (run directory, resume of the episode log,
signals, NaN stop, video, wandb, determinism) is in test_run_contract.py, the replay buffer across a kill and
a resume in test_off_policy_checkpoints.py."""

import dataclasses
import os

import gymnasium as gym
import numpy as np
import pytest
import torch

import sac
from helpers import FixedSpacesEnv, read_episodes

gym.register("TestUnboundedActions-v0", entry_point=FixedSpacesEnv,
             kwargs=dict(observation_space=gym.spaces.Box(-1, 1, (3,)),
                         action_space=gym.spaces.Box(-np.inf, np.inf, (2,))))


def tiny(**overrides) -> sac.Args:
    """A few hundred Pendulum steps with small networks: every code path, far too short to learn."""
    settings = dict(env_id="Pendulum-v1", total_timesteps=600, learning_starts=200, batch_size=32, hidden_size=32,
                    eval_every=0, eval_episodes=2, run_dir="run")
    settings.update(overrides)
    return dataclasses.replace(sac.Args(), **settings)


def test_real_mujoco_hopper_with_the_paper_networks():
    summary = sac.main(tiny(env_id="Hopper-v5", total_timesteps=300, learning_starts=100, batch_size=256,
                            hidden_size=256, eval_episodes=1))
    assert summary["total_steps"] == 300 and summary["buffer_size"] == 300 and summary["eval"]["episodes"] == 1
    assert len(read_episodes("run")) > 3  # a random Hopper falls within a few dozen steps


def test_the_buffer_memory_is_stated_at_the_start(capsys):
    sac.main(tiny(env_id="Hopper-v5", total_timesteps=50, learning_starts=100, eval_episodes=0))
    line = capsys.readouterr().out.splitlines()[0]
    # Hopper: 27 float32 = 108 bytes a transition; 1M of them 108e6 bytes = 103 MiB.
    assert line.startswith("replay buffer: 108 bytes a transition") and "1M transitions take 103 MiB" in line
    assert "this run's 50 take" in line  # no more than the run can fill


def test_periodic_evaluations_are_logged_and_recorded():
    summary = sac.main(tiny(eval_every=200, eval_episodes=2))
    assert [step for step, _, _ in summary["evaluations"]] == [200, 400, 600]
    # Pendulum returns are negative; the deterministic policy repeats the same two seeded episodes, so
    # the evaluation after learning starts is a different number from the one before.
    assert all(mean < 0 for _, mean, _ in summary["evaluations"])
    assert summary["evaluations"][0][1] != summary["evaluations"][-1][1]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator("run")
    events.Reload()
    assert [e.step for e in events.Scalars("eval/mean_return")][:3] == [200, 400, 600]
    assert {"losses/q_loss", "losses/policy_loss", "losses/alpha", "losses/entropy"} <= set(events.Tags()["scalars"])


def test_a_fixed_alpha_is_not_learned_and_a_free_one_is():
    sac.main(tiny(alpha=0.1, save_model=True, eval_episodes=0))
    assert torch.load("run/model.pt", weights_only=True)["model"]["log_alpha"].item() == 0.0
    sac.main(tiny(save_model=True, eval_episodes=0, run_dir="free"))
    assert torch.load("free/model.pt", weights_only=True)["model"]["log_alpha"].item() != 0.0


def test_save_model_then_evaluate_acts_the_same():
    summary = sac.main(tiny(save_model=True, eval_episodes=2))
    result = sac.main_evaluate(sac.EvalArgs("run/model.pt", episodes=2, seed=1 + 100_000))
    assert result["mean_return"] == pytest.approx(summary["eval"]["mean_return"])


def test_the_target_q_networks_stay_out_of_autograd_over_real_updates(monkeypatch):
    # A Polyak update recorded by autograd makes the target tensors require grad after the first update and
    # chains each update's graph onto the last one's: memory grew by about 3 KB an update, without end.
    # Every one of a run's 400 updates leaves the targets as plain leaf tensors, with no graph behind them.
    real = sac.polyak_update
    after_each_update = []

    def polyak_update(target, source, tau):
        real(target, source, tau)
        after_each_update.append([(t.requires_grad, t.grad_fn) for t in target])

    monkeypatch.setattr(sac, "polyak_update", polyak_update)
    sac.main(tiny(eval_episodes=0))
    assert len(after_each_update) == 600 - 200
    assert all(state == (False, None) for states in after_each_update for state in states)


def test_presets_and_paper_defaults():
    args = sac.parse_args([])
    assert (args.env_id, args.buffer_size, args.learning_starts) == ("Hopper-v5", 1_000_000, 10_000)
    assert args.batch_size == 256
    assert (args.learning_rate, args.gamma, args.tau, args.hidden_size) == (3e-4, 0.99, 0.005, 256)
    assert args.alpha is None and args.target_entropy is None and args.eval_deterministic
    assert sac.parse_args(["--alpha", "0.2"]).alpha == 0.2
    assert isinstance(sac.parse_args(["evaluate", "m.pt"]), sac.EvalArgs)
    assert sac.parse_args(["mujoco", "--alpha", "0.1"]).alpha == 0.1  # the one preset, named
    with pytest.raises(sac.ConfigError, match="a preset is the first word of the command, not a flag"):
        sac.parse_args(["--preset", "mujoco"])


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(env_id="CartPole-v1"), "for discrete actions use ppo.py, a2c_atari.py or reinforce.py"),
        (dict(env_id="TestMultiBinaryActions-v0"), "needs a 1-D Box (continuous) action space, not MultiBinary"),
        (dict(env_id="TestUnboundedActions-v0"), "needs finite action bounds"),
        (dict(env_id="Hoper-v5"), "unknown environment id 'Hoper-v5'; did you mean Hopper-v5"),
        (dict(learning_rate=0.0), "--learning-rate must be positive"),
        (dict(batch_size=0), "--batch-size must be positive"),
        (dict(buffer_size=-1), "--buffer-size must be positive"),
        (dict(total_timesteps=0), "--total-timesteps must be positive"),
        (dict(tau=1.5), "--tau must be in [0, 1]"),
        (dict(gamma=0.0), "--gamma must be in (0, 1]"),
        (dict(alpha=-0.1), "--alpha must be non-negative"),
        (dict(learning_starts=-1), "--learning-starts must be non-negative"),
        (dict(eval_every=-5), "--eval-every must be non-negative"),
    ],
)
def test_bad_settings_are_refused_before_training(overrides, message):
    with pytest.raises(sac.ConfigError) as error:
        sac.main(tiny(**overrides))
    assert message in str(error.value)
    assert not os.path.exists("run")  # nothing was written
