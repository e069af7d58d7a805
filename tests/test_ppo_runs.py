"""ppo.py end to end with tiny budgets: the environment families, the surrogates, presets, saving and
evaluating with normalisation, and the refusal of bad input. The run contract shared by
every script (run directory, resume, signals, NaN stop, video, wandb, determinism) is in test_run_contract.py."""

import dataclasses
import os

import numpy as np
import pytest
import torch

import ppo
from helpers import read_episodes, run_cli


def tiny(preset: str = "classic", **overrides) -> ppo.Args:
    """A run of a few batches: enough to exercise every code path, far too short to learn."""
    settings = dict(total_timesteps=512, num_steps=128, minibatch_size=64, update_epochs=2, eval_episodes=2,
                    run_dir="run")
    settings.update(overrides)
    return dataclasses.replace(ppo.PRESETS[preset], **settings)


def test_pendulum_continuous_actions_with_normalisation(pendulum_steps):
    summary = ppo.main(tiny("mujoco", env_id="Pendulum-v1", eval_episodes=1))
    actions, rewards = (np.array(column) for column in zip(*pendulum_steps))
    # 512 training steps, then one evaluation episode of Pendulum's 200 steps.
    assert len(rewards) == 512 + 200 and summary["eval"]["episodes"] == 1
    # The logged returns are the env's own rewards summed over whole episodes, not the normalised
    # rewards PPO learns from; the evaluation's likewise.
    rows = read_episodes("run")
    assert [int(r["episodic_length"]) for r in rows] == [200, 200]
    assert [float(r["episodic_return"]) for r in rows] == pytest.approx([rewards[:200].sum(), rewards[200:400].sum()])
    assert summary["eval"]["mean_return"] == pytest.approx(rewards[512:].sum())
    # The Gaussian's samples (std 1 at the start) reach the env clipped to its torque bounds, +-2.
    assert np.abs(actions).max() == 2.0


@pytest.mark.parametrize("surrogate", ["adaptive-kl", "fixed-kl", "none"])
def test_every_surrogate_of_table_1_runs(surrogate):
    assert ppo.main(tiny(surrogate=surrogate, eval_episodes=0))["total_steps"] == 512


def test_real_mujoco_env():
    summary = ppo.main(tiny("mujoco", env_id="HalfCheetah-v5", total_timesteps=256, num_steps=256, eval_episodes=1))
    assert summary["total_steps"] == 256 and summary["eval"]["episodes"] == 1


@pytest.mark.parametrize("backend", ["gymnasium", "envpool"])
def test_real_atari_env(backend):
    if backend == "envpool":
        pytest.importorskip("envpool")
    args = tiny("atari", env_backend=backend, num_envs=2, total_timesteps=256, minibatch_size=128, eval_episodes=1)
    summary = ppo.main(args)
    assert summary["total_steps"] == 256
    # Whole games, true scores: Breakout's score is a non-negative whole number, and a random-ish
    # policy's game lasts more than one life's worth of agent steps.
    assert summary["eval"]["mean_return"] >= 0 and float(summary["eval"]["mean_return"]).is_integer()


def test_atari_observations_are_stacked_greyscale_uint8():
    envs = ppo.make_vector_env(tiny("atari", num_envs=1), seed=0, video_dir="")
    obs, _ = envs.reset(seed=0)
    envs.close()
    assert obs.shape == (1, 4, 84, 84) and obs.dtype == np.uint8


def test_envpool_matches_the_gymnasium_observation_format_and_episode_definition():
    pytest.importorskip("envpool")
    gym_envs = ppo.make_vector_env(tiny("atari", num_envs=2), seed=0, video_dir="")
    pool = ppo.make_vector_env(tiny("atari", num_envs=2, env_backend="envpool"), seed=0, video_dir="")
    assert pool.single_observation_space == gym_envs.single_observation_space
    assert pool.single_action_space == gym_envs.single_action_space
    gym_envs.close()
    # Play random actions until a whole game ends: lives are lost along the way (terminated=True)
    # but only the game over counts as an episode, with its true score.
    pool.reset()
    rng = np.random.default_rng(0)
    lives_lost, episodes = 0, []
    while not episodes:
        obs, _, terminated, truncated, infos = pool.step(rng.integers(0, 4, size=2))
        lives_lost += int(terminated.sum())
        if "final_obs" in infos:
            assert infos["final_obs"].shape == obs.shape
        episodes.extend(ppo.finished_episodes(infos)[0])
    pool.close()
    assert lives_lost >= 5  # Breakout has five lives
    assert all(float(r).is_integer() and r >= 0 for r in episodes)


def test_save_model_then_evaluate_acts_the_same():
    args = tiny("mujoco", env_id="Pendulum-v1", save_model=True, eval_episodes=2, eval_deterministic=True)
    summary = ppo.main(args)
    saved = torch.load("run/model.pt", weights_only=True)
    assert saved["args"]["env_id"] == "Pendulum-v1"
    assert saved["model"]["obs_rms.count"] > 1  # the observation statistics travel with the weights
    result = ppo.main_evaluate(ppo.EvalArgs("run/model.pt", episodes=2, seed=args.seed + 100_000, deterministic=True))
    assert result["mean_return"] == pytest.approx(summary["eval"]["mean_return"])


def test_weights_that_turn_nan_under_a_finite_loss_are_never_checkpointed(monkeypatch):
    """A gradient that overflows in the backward pass turns the weights to nan although the loss checked
    before the step was finite. The run stops before saving them: the checkpoint on disk is the last
    finite one, and the run resumes from it."""
    real_policy_loss = ppo.policy_loss

    def overflowing(*args, **kwargs):
        loss, kl, clip_fraction = real_policy_loss(*args, **kwargs)
        if loss.requires_grad and os.path.exists("run/checkpoint.pt"):
            loss.register_hook(lambda grad: grad * float("inf"))
        return loss, kl, clip_fraction

    # One minibatch a batch: the step that goes wrong is the last one before the batch's checkpoint.
    args = tiny(minibatch_size=128, update_epochs=1, checkpoint_every=128, eval_episodes=0)
    with monkeypatch.context() as patch, pytest.raises(FloatingPointError, match="run/checkpoint.pt holds the last finite"):
        patch.setattr(ppo, "policy_loss", overflowing)
        ppo.main(args)
    checkpoint = torch.load("run/checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == 128
    assert all(torch.isfinite(value).all() for value in checkpoint["model"].values())
    assert ppo.main(dataclasses.replace(ppo.Args(), resume="run"))["total_steps"] == 512


def test_presets_and_overrides_from_the_command_line():
    args = ppo.parse_args(["--env-id", "Acrobot-v1"])
    assert args.preset == "classic" and args.env_id == "Acrobot-v1" and args.num_steps == 2048
    args = ppo.parse_args(["atari", "--learning-rate", "1e-3"])
    assert args.preset == "atari" and (args.num_envs, args.num_steps, args.update_epochs, args.minibatch_size) == (
        8, 128, 3, 256)
    assert args.learning_rate == 1e-3 and args.anneal and args.clip_coef == 0.1 and args.ent_coef == 0.01
    args = ppo.parse_args(["mujoco"])
    assert args.normalize_obs and args.normalize_reward and args.total_timesteps == 1_000_000
    assert isinstance(ppo.parse_args(["evaluate", "m.pt", "--episodes", "4"]), ppo.EvalArgs)
    with pytest.raises(ppo.ConfigError, match="a preset is the first word of the command"):
        ppo.parse_args(["--preset", "atari"])


def test_help_shows_the_preset_defaults():
    out = run_cli("ppo", "atari", "--help")
    assert out.returncode == 0
    assert "--learning-rate FLOAT" in out.stdout and "(default: 0.00025)" in out.stdout


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(env_id="CartPol-v1"), "unknown environment id 'CartPol-v1'; did you mean CartPole-v1"),
        (dict(env_id="CartPol-v1", total_timesteps=10), "unknown environment id 'CartPol-v1'"),
        (dict(env_id="ALE/Pong-v5"), "ALE/Pong-v5 skips frames (frameskip=4) or makes actions sticky (p=0.25)"),
        (dict(env_id="Pong-v4"), "use PongNoFrameskip-v4"),
        (dict(env_id="TestMultiBinaryActions-v0"), "supports Discrete and 1-D Box action spaces, not MultiBinary"),
        (dict(num_steps=100, minibatch_size=64), "does not divide into minibatches of --minibatch-size 64"),
        (dict(learning_rate=0.0), "--learning-rate must be positive"),
        (dict(learning_rate=-3e-4), "--learning-rate must be positive"),
        (dict(learning_rate=float("nan")), "--learning-rate must be a finite number, got nan"),
        (dict(gamma=float("inf")), "--gamma must be a finite number, got inf"),
        (dict(total_timesteps=0), "must be positive"),
        (dict(total_timesteps=100), "is less than one batch"),
        (dict(eval_every=-1), "--eval-every must be non-negative, got -1"),
        (dict(gamma=1.5), "--gamma must be in (0, 1]"),
        (dict(gamma=0.0), "--gamma must be in (0, 1]"),
        (dict(gae_lambda=-0.1), "--gae-lambda must be in (0, 1]"),
        (dict(env_id="CartPole-v1", env_backend="envpool"), "--env-backend envpool is for Atari ids"),
        (dict(surrogate="adaptive-kl", kl_beta=0.0), "--surrogate adaptive-kl needs a positive --kl-beta"),
    ],
)
def test_bad_settings_are_refused_before_training(overrides, message):
    with pytest.raises(ppo.ConfigError) as error:
        ppo.main(tiny(**overrides))
    assert message in str(error.value)
    assert not os.path.exists("run")  # nothing was written


