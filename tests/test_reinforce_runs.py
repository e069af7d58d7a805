"""reinforce.py end to end with tiny budgets: the run contract on discrete and continuous classic
control, saving and evaluating, determinism, checkpoint and resume, and the refusal of bad input."""

import dataclasses
import os

import numpy as np
import pytest
import torch

import reinforce
from helpers import read_episodes, returns_of, run_cli, start_run, wait_for


def tiny(**overrides) -> reinforce.Args:
    """A run of a few batches: enough to exercise every code path, far too short to learn."""
    settings = dict(total_timesteps=300, episodes_per_update=2, eval_episodes=2, run_dir="run")
    settings.update(overrides)
    return dataclasses.replace(reinforce.Args(), **settings)


@pytest.mark.parametrize("baseline", [False, True])
@pytest.mark.parametrize("reward_to_go", [False, True])
def test_every_variant_runs(baseline, reward_to_go):
    summary = reinforce.main(tiny(baseline=baseline, reward_to_go=reward_to_go, eval_episodes=0, gamma=1.0))
    assert summary["total_steps"] >= 300


def test_pendulum_continuous_actions(pendulum_steps):
    summary = reinforce.main(tiny(env_id="Pendulum-v1", baseline=True, total_timesteps=400, eval_episodes=1))
    actions, rewards = (np.array(column) for column in zip(*pendulum_steps))
    rows = read_episodes("run")
    assert [int(r["episodic_length"]) for r in rows] == [200, 200]  # its time limit
    assert summary["total_steps"] == 400
    # Then one evaluation episode. The logged returns are the env's own rewards summed over whole
    # episodes; the evaluation's likewise.
    assert len(rewards) == 400 + 200 and summary["eval"]["episodes"] == 1
    assert [float(r["episodic_return"]) for r in rows] == pytest.approx([rewards[:200].sum(), rewards[200:400].sum()])
    assert summary["eval"]["mean_return"] == pytest.approx(rewards[400:].sum())
    # The Gaussian's samples (std 1 at the start) reach the env clipped to its torque bounds, +-2.
    assert np.abs(actions).max() == 2.0


def test_save_model_then_evaluate_acts_the_same():
    args = tiny(env_id="Pendulum-v1", baseline=True, total_timesteps=400, save_model=True, eval_episodes=2,
                eval_deterministic=True)
    summary = reinforce.main(args)
    saved = torch.load("run/model.pt", weights_only=True)
    assert saved["args"]["env_id"] == "Pendulum-v1"
    assert "actor_logstd" in saved["model"] and "critic.0.weight" in saved["model"]
    result = reinforce.main_evaluate(reinforce.EvalArgs("run/model.pt", episodes=2, seed=args.seed + 100_000,
                                                        deterministic=True))
    assert result["mean_return"] == pytest.approx(summary["eval"]["mean_return"])


def test_command_line_flags_and_help():
    args = reinforce.parse_args(["--env-id", "Acrobot-v1", "--baseline", "--no-reward-to-go", "--gamma", "1"])
    assert args.env_id == "Acrobot-v1" and args.baseline and not args.reward_to_go and args.gamma == 1.0
    assert isinstance(reinforce.parse_args(["evaluate", "m.pt", "--episodes", "4"]), reinforce.EvalArgs)
    # The one preset, classic, may be named first or left out; --threads defaults to None, which means 1.
    assert reinforce.parse_args(["classic", "--baseline"]) == reinforce.parse_args(["--baseline"])
    assert reinforce.parse_args([]).threads is None
    out = run_cli("reinforce", "--help")
    assert out.returncode == 0
    assert "--baseline, --no-baseline" in out.stdout and "--reward-to-go, --no-reward-to-go" in out.stdout
    assert "--episodes-per-update INT" in out.stdout and "Algorithm 13.4" in out.stdout


# --- checkpoint and resume ---------------------------------------------------------------------


def test_resume_after_a_kill_replays_exactly_the_uninterrupted_run():
    flags = ("--baseline", "--total-timesteps", "12000", "--checkpoint-every", "1000")
    process = start_run("reinforce", *flags)
    checkpoint = "run/checkpoint.pt"
    # Kill it hard once a checkpoint exists and episodes beyond it have been written.
    wait_for(lambda: os.path.exists(checkpoint) and len(read_episodes("run")) > 40, process)
    process.kill()
    process.wait()
    before = read_episodes("run")
    saved_step = torch.load(checkpoint, weights_only=True)["global_step"]
    assert 0 < saved_step < 12000

    summary = reinforce.main(dataclasses.replace(reinforce.Args(), resume="run"))
    after = read_episodes("run")
    kept = [r for r in before if int(r["global_step"]) <= saved_step]
    assert after[: len(kept)] == kept  # nothing from before the checkpoint was lost or altered
    assert len({tuple(r.values()) for r in after}) == len(after)  # no duplicate row
    # Each batch starts fresh episodes seeded by the step count and the RNG states are restored, so
    # the resumed run is the uninterrupted one, episode for episode.
    reinforce.main(reinforce.parse_args(["--run-dir", "whole", "--eval-episodes", "0", *flags]))
    assert returns_of("run") == returns_of("whole")
    assert summary["total_steps"] == int(after[-1]["global_step"])


def test_weights_that_turn_nan_under_a_finite_loss_are_never_checkpointed(monkeypatch):
    """A gradient that overflows in the backward pass turns the baseline's weights to nan although the loss
    checked before the step was finite. The run stops before saving them: the checkpoint on disk is the
    last finite one, and the run resumes from it."""
    real_value_loss = reinforce.value_loss

    def overflowing(values, returns):
        loss = real_value_loss(values, returns)
        if os.path.exists("run/checkpoint.pt"):
            loss.register_hook(lambda grad: grad * float("inf"))
        return loss

    args = tiny(baseline=True, checkpoint_every=1, eval_episodes=0)  # a checkpoint after every batch
    with monkeypatch.context() as patch, pytest.raises(FloatingPointError, match="run/checkpoint.pt holds the last finite"):
        patch.setattr(reinforce, "value_loss", overflowing)
        reinforce.main(args)
    checkpoint = torch.load("run/checkpoint.pt", weights_only=True)
    assert checkpoint["update"] == 1
    assert all(torch.isfinite(value).all() for value in checkpoint["model"].values())
    assert reinforce.main(dataclasses.replace(reinforce.Args(), resume="run"))["total_steps"] >= 300


def test_a_misspelled_env_id_is_refused_in_one_line():
    with pytest.raises(SystemExit) as stop:
        reinforce.cli(["--env-id", "CartPol-v1", "--total-timesteps", "10", "--run-dir", "run"])
    assert stop.value.code.startswith("reinforce.py: error: unknown environment id 'CartPol-v1'; did you mean CartPole-v1")
    assert not os.path.exists("run")


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(env_id="CartPol-v1"), "unknown environment id 'CartPol-v1'; did you mean CartPole-v1"),
        (dict(env_id="ALE/Pong-v5"), "ALE/Pong-v5 is an Atari game, which reinforce.py does not play"),
        (dict(env_id="PongNoFrameskip-v4"), "ppo.py, trpo.py, a2c_atari.py, a3c_hogwild.py, async_q.py and paac.py do"),
        (dict(env_id="TestImageObservations-v0"), "supports 1-D vector observations (classic control), not Box(0, 255, (84, 84, 3)"),
        (dict(env_id="TestImageObservations-v0"), "for images use ppo.py"),
        (dict(env_id="TestMultiBinaryActions-v0"), "supports Discrete and 1-D Box action spaces, not MultiBinary"),
        (dict(learning_rate=0.0), "--learning-rate must be positive"),
        (dict(learning_rate=-3e-3), "--learning-rate must be positive"),
        (dict(learning_rate=float("nan")), "--learning-rate must be a finite number, got nan"),
        (dict(gamma=float("inf")), "--gamma must be a finite number, got inf"),
        (dict(value_learning_rate=0.0, baseline=True), "--value-learning-rate must be positive"),
        (dict(total_timesteps=0), "--total-timesteps must be positive, got 0"),
        (dict(total_timesteps=-5), "--total-timesteps must be positive, got -5"),
        (dict(episodes_per_update=0), "--episodes-per-update must be positive, got 0"),
        (dict(value_epochs=0), "--value-epochs must be positive, got 0"),
        (dict(hidden_size=0), "--hidden-size must be positive, got 0"),
        (dict(gamma=1.5), "--gamma must be in (0, 1]"),
        (dict(gamma=0.0), "--gamma must be in (0, 1]"),
        (dict(gamma=-0.9), "--gamma must be in (0, 1]"),
        (dict(checkpoint_every=-1), "--checkpoint-every and --eval-episodes must be non-negative"),
        (dict(threads=0), "--threads must be positive"),
    ],
)
def test_bad_settings_are_refused_before_training(overrides, message):
    with pytest.raises(reinforce.ConfigError) as error:
        reinforce.main(tiny(**overrides))
    assert message in str(error.value)
    assert not os.path.exists("run")  # nothing was written


def test_evaluating_a_missing_model_is_refused():
    with pytest.raises(reinforce.ConfigError, match="nowhere.pt is not a checkpoint or model of reinforce.py"):
        reinforce.main_evaluate(reinforce.EvalArgs("nowhere.pt"))


def test_batch_seeds_differ_across_runs_and_steps():
    seeds = {reinforce.batch_seed(seed, step) for seed in (1, 2, 3) for step in (0, 1, 2, 500)}
    assert len(seeds) == 12 and reinforce.batch_seed(1, 1) != reinforce.batch_seed(2, 0)
    assert reinforce.batch_seed(1, 7) == reinforce.batch_seed(1, 7)
