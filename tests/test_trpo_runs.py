"""trpo.py end to end with tiny budgets: the environment families (a real MuJoCo and a real Atari env),
the natural-gradient switch, presets, saving and evaluating with normalisation, and the refusal of bad
input. The run contract shared by every script is in test_run_contract.py."""

import dataclasses
import os

import numpy as np
import pytest
import torch

import trpo
from helpers import read_episodes, run_cli


def tiny(preset: str = "classic", **overrides) -> trpo.Args:
    """A run of a few batches: enough to exercise every code path, far too short to learn."""
    settings = dict(total_timesteps=512, num_steps=128, eval_episodes=2, run_dir="run")
    settings.update(overrides)
    return dataclasses.replace(trpo.PRESETS[preset], **settings)


def test_real_mujoco_env_hopper():
    summary = trpo.main(tiny("mujoco", env_id="Hopper-v5", total_timesteps=1024, num_steps=256, eval_episodes=1))
    assert summary["total_steps"] == 1024 and summary["eval"]["episodes"] == 1
    updates = summary["updates"]
    assert updates["count"] == 4 and updates["kl_above_max_kl"] == 0  # the line search keeps KL <= delta
    assert 0 <= updates["mean_kl"] <= 0.01


def test_pendulum_continuous_actions_with_normalisation_save_and_evaluate(pendulum_steps):
    args = tiny("mujoco", env_id="Pendulum-v1", save_model=True, eval_episodes=2, eval_deterministic=True)
    summary = trpo.main(args)
    actions, rewards = (np.array(column) for column in zip(*pendulum_steps))
    # 512 training steps, then two evaluation episodes of Pendulum's 200 steps.
    assert len(rewards) == 512 + 2 * 200 and summary["eval"]["episodes"] == 2
    # The logged returns are the env's own rewards summed over whole episodes; the evaluation's likewise.
    rows = read_episodes("run")
    assert [int(r["episodic_length"]) for r in rows] == [200, 200]
    assert [float(r["episodic_return"]) for r in rows] == pytest.approx([rewards[:200].sum(), rewards[200:400].sum()])
    assert summary["eval"]["mean_return"] == pytest.approx((rewards[512:712].sum() + rewards[712:912].sum()) / 2)
    # The Gaussian's samples (std 1 at the start) reach the env clipped to its torque bounds, +-2.
    assert np.abs(actions[:512]).max() == 2.0
    saved = torch.load("run/model.pt", weights_only=True)
    assert saved["args"]["env_id"] == "Pendulum-v1"
    assert saved["model"]["obs_rms.count"] > 1  # the observation statistics travel with the weights
    result = trpo.main_evaluate(trpo.EvalArgs("run/model.pt", episodes=2, seed=args.seed + 100_000, deterministic=True))
    assert result["mean_return"] == pytest.approx(summary["eval"]["mean_return"])


def test_no_line_search_is_the_natural_gradient():
    summary = trpo.main(tiny(line_search=False, eval_episodes=0))
    assert summary["algo"] == "npg" and summary["updates"]["count"] == 4
    assert summary["updates"]["line_search_rejected"] == 0  # every full step is taken


@pytest.mark.parametrize("backend", ["gymnasium", "envpool"])
def test_real_atari_env(backend):
    if backend == "envpool":
        pytest.importorskip("envpool")
    args = tiny("atari", env_backend=backend, num_envs=2, total_timesteps=256, eval_episodes=1)
    summary = trpo.main(args)
    assert summary["total_steps"] == 256 and 0 <= summary["updates"]["mean_kl"] <= 0.001
    # Whole games, true scores: Breakout's score is a non-negative whole number.
    assert summary["eval"]["mean_return"] >= 0 and float(summary["eval"]["mean_return"]).is_integer()


def test_atari_observations_are_stacked_greyscale_uint8():
    envs = trpo.make_vector_env(tiny("atari", num_envs=1), seed=0, video_dir="")
    obs, _ = envs.reset(seed=0)
    envs.close()
    assert obs.shape == (1, 4, 84, 84) and obs.dtype == np.uint8


def test_policy_and_value_networks_are_separate():
    args = trpo.PRESETS["mujoco"]
    envs = trpo.make_vector_env(dataclasses.replace(args, env_id="Pendulum-v1"), seed=0, video_dir="")
    agent = trpo.Agent(envs.single_observation_space, envs.single_action_space, args)
    envs.close()
    policy = {id(p) for p in agent.policy_parameters()}
    assert policy.isdisjoint(id(p) for p in agent.critic.parameters())
    assert len(policy) + len(list(agent.critic.parameters())) == len(list(agent.parameters()))
    assert [m.out_features for m in agent.actor if isinstance(m, torch.nn.Linear)] == [32, 32, 1]


def test_weights_that_turn_nan_under_a_finite_loss_are_never_checkpointed(monkeypatch):
    """A gradient that overflows in the value fit's backward pass turns the value weights to nan although
    the loss checked before the step was finite. The run stops before saving them: the checkpoint on disk
    is the last finite one, and the run resumes from it."""
    real_get_value = trpo.Agent.get_value

    def overflowing(self, obs):
        value = real_get_value(self, obs)
        if value.requires_grad and os.path.exists("run/checkpoint.pt"):
            value.register_hook(lambda grad: grad * float("inf"))
        return value

    # One value step a batch: the step that goes wrong is the last one before the batch's checkpoint.
    args = tiny(value_epochs=1, value_minibatch_size=128, checkpoint_every=128, eval_episodes=0)
    with monkeypatch.context() as patch, pytest.raises(FloatingPointError, match="run/checkpoint.pt holds the last finite"):
        patch.setattr(trpo.Agent, "get_value", overflowing)
        trpo.main(args)
    checkpoint = torch.load("run/checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == 128
    assert all(torch.isfinite(value).all() for value in checkpoint["model"].values())
    assert trpo.main(dataclasses.replace(trpo.Args(), resume="run"))["total_steps"] == 512


def test_presets_and_overrides_from_the_command_line():
    args = trpo.parse_args([])
    assert args.preset == "mujoco" and args.env_id == "Hopper-v5" and args.normalize_obs
    assert (args.max_kl, args.cg_iters, args.cg_damping, args.gae_lambda) == (0.01, 10, 0.1, 0.98)
    args = trpo.parse_args(["atari", "--max-kl", "0.002"])
    assert args.preset == "atari" and args.max_kl == 0.002 and args.cg_damping == 1e-3 and args.gamma == 0.98 and args.gae_lambda == 1.0
    args = trpo.parse_args(["classic", "--no-line-search", "--hidden-sizes", "64", "64"])
    assert args.env_id == "CartPole-v1" and not args.normalize_obs and not args.line_search
    assert args.hidden_sizes == (64, 64)
    assert isinstance(trpo.parse_args(["evaluate", "m.pt", "--episodes", "4"]), trpo.EvalArgs)
    with pytest.raises(trpo.ConfigError, match="a preset is the first word of the command"):
        trpo.parse_args(["--preset=classic"])


def test_help_shows_the_preset_defaults():
    out = run_cli("trpo", "atari", "--help")
    assert out.returncode == 0
    assert "--max-kl FLOAT" in out.stdout and "(default: 0.001)" in out.stdout


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(env_id="CartPol-v1"), "unknown environment id 'CartPol-v1'; did you mean CartPole-v1"),
        (dict(env_id="CartPol-v1", total_timesteps=10), "unknown environment id 'CartPol-v1'"),
        (dict(env_id="ALE/Pong-v5"), "ALE/Pong-v5 skips frames (frameskip=4) or makes actions sticky (p=0.25)"),
        (dict(env_id="Pong-v4"), "use PongNoFrameskip-v4"),
        (dict(env_id="TestMultiBinaryActions-v0"), "supports Discrete and 1-D Box action spaces, not MultiBinary"),
        (dict(max_kl=0.0), "--max-kl must be positive"),
        (dict(max_kl=float("nan")), "--max-kl must be a finite number, got nan"),
        (dict(cg_damping=float("inf")), "--cg-damping must be a finite number, got inf"),
        (dict(cg_damping=-0.1), "--cg-damping must be non-negative"),
        (dict(cg_iters=0), "--cg-iters must be positive"),
        (dict(backtrack_coeff=1.0), "--backtrack-coeff must be in (0, 1)"),
        (dict(backtrack_iters=0), "--backtrack-iters must be positive"),
        (dict(value_epochs=0), "--value-epochs must be positive"),
        (dict(hidden_sizes=(64, 0)), "--hidden-sizes must be one or more positive sizes"),
        (dict(learning_rate=0.0), "--learning-rate must be positive"),
        (dict(total_timesteps=0), "must be positive"),
        (dict(total_timesteps=100), "is less than one batch"),
        (dict(eval_every=-1), "--eval-every must be non-negative, got -1"),
        (dict(gamma=1.5), "--gamma must be in (0, 1]"),
        (dict(gae_lambda=0.0), "--gae-lambda must be in (0, 1]"),
        (dict(env_id="CartPole-v1", env_backend="envpool"), "--env-backend envpool is for Atari ids"),
    ],
)
def test_bad_settings_are_refused_before_training(overrides, message):
    with pytest.raises(trpo.ConfigError) as error:
        trpo.main(tiny(**overrides))
    assert message in str(error.value)
    assert not os.path.exists("run")  # nothing was written
