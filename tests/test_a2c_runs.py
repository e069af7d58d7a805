"""a2c_atari.py end to end with tiny budgets: one-step actor-critic, truncation, real Atari on both
backends, MinAtar, presets, saving and evaluating, and bad input. The run contract shared
by every script is in test_run_contract.py."""

import dataclasses
import os

import gymnasium as gym
import pytest
import torch

import a2c_atari as a2c
from helpers import read_episodes, run_cli


def tiny(preset: str = "classic", **overrides) -> a2c.Args:
    """A run of a few batches: enough to exercise every code path, far too short to learn."""
    settings = dict(total_timesteps=400, num_envs=2, num_steps=5, eval_episodes=2, run_dir="run")
    settings.update(overrides)
    return dataclasses.replace(a2c.PRESETS[preset], **settings)


def test_one_step_actor_critic():
    # Sutton & Barto's Algorithm 13.5: one env, an update after every step, R = r + gamma V(s').
    summary = a2c.main(tiny(num_envs=1, num_steps=1, total_timesteps=300, eval_episodes=1))
    assert summary["total_steps"] == 300
    steps = [int(r["global_step"]) for r in read_episodes("run")]
    assert steps and sum(int(r["episodic_length"]) for r in read_episodes("run")) == steps[-1]


def test_truncated_episodes_bootstrap_from_their_final_observation(monkeypatch):
    # CartPole cut off at 10 steps: every episode that lasts that long is truncated, and its final
    # observation's value is asked for.
    calls = []
    real = a2c.nstep_returns

    def spy(rewards, next_value, terminated, truncated, final_values, gamma):
        calls.append((truncated.clone(), final_values.clone()))
        return real(rewards, next_value, terminated, truncated, final_values, gamma)

    monkeypatch.setattr(a2c, "nstep_returns", spy)
    gym.register("TestShortCartPole-v1", entry_point="gymnasium.envs.classic_control:CartPoleEnv", max_episode_steps=10)
    a2c.main(tiny(env_id="TestShortCartPole-v1", total_timesteps=200, eval_episodes=0))
    truncations = [(tr, fv) for tr, fv in calls if tr.any()]
    assert truncations and all((fv[tr] != 0).all() for tr, fv in truncations)
    assert all(int(r["episodic_length"]) <= 10 for r in read_episodes("run"))


@pytest.mark.parametrize("backend", ["gymnasium", "envpool"])
def test_real_atari_env(backend):
    if backend == "envpool":
        pytest.importorskip("envpool")
    summary = a2c.main(tiny("atari", env_backend=backend, num_envs=4, total_timesteps=400, eval_episodes=1))
    assert summary["total_steps"] == 400
    # Whole games, true scores: Breakout's score is a non-negative whole number.
    assert summary["eval"]["mean_return"] >= 0 and float(summary["eval"]["mean_return"]).is_integer()


def test_minatar_channel_last_bool_observations():
    pytest.importorskip("minatar")
    summary = a2c.main(tiny("minatar", total_timesteps=2000, num_envs=4, eval_episodes=1))
    assert summary["total_steps"] == 2000 and read_episodes("run")


def test_save_model_then_evaluate_acts_the_same():
    args = tiny(save_model=True, eval_episodes=3, eval_deterministic=True, total_timesteps=1000)
    summary = a2c.main(args)
    saved = torch.load("run/model.pt", weights_only=True)
    assert saved["args"]["env_id"] == "CartPole-v1"
    result = a2c.main_evaluate(a2c.EvalArgs("run/model.pt", episodes=3, seed=args.seed + 100_000, deterministic=True))
    assert result["mean_return"] == pytest.approx(summary["eval"]["mean_return"])


def test_presets_and_overrides_from_the_command_line():
    args = a2c.parse_args(["--env-id", "Acrobot-v1"])
    assert args.preset == "classic" and args.env_id == "Acrobot-v1"
    args = a2c.parse_args(["atari", "--learning-rate", "1e-3"])
    assert args.preset == "atari" and (args.num_envs, args.num_steps, args.rms_eps, args.rms_decay) == (16, 5, 0.1, 0.99)
    assert args.learning_rate == 1e-3 and args.anneal and args.ent_coef == 0.01 and args.vf_coef == 0.5
    assert a2c.parse_args(["minatar"]).env_id == "MinAtar/Breakout-v1"
    with pytest.raises(a2c.ConfigError, match="a preset is the first word of the command, not a flag"):
        a2c.parse_args(["--preset", "atari"])
    assert isinstance(a2c.parse_args(["evaluate", "m.pt", "--episodes", "4"]), a2c.EvalArgs)


def test_help_shows_the_preset_defaults():
    out = run_cli("a2c_atari", "atari", "--help")
    assert out.returncode == 0
    assert "--rms-eps FLOAT" in out.stdout and "(default: 0.1)" in out.stdout


# --- checkpoint and resume ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(env_id="CartPol-v1"), "unknown environment id 'CartPol-v1'; did you mean CartPole-v1"),
        (dict(env_id="Pendulum-v1"), "supports Discrete action spaces only, not Box(-2.0, 2.0, (1,), float32); "
                                     "for continuous actions use ppo.py, trpo.py, ddpg.py, td3.py or sac.py"),
        (dict(learning_rate=0.0), "--learning-rate must be positive"),
        (dict(learning_rate=-7e-4), "--learning-rate must be positive"),
        (dict(total_timesteps=0), "must be positive"),
        (dict(num_steps=0), "must be positive"),
        (dict(total_timesteps=5), "is less than one batch"),
        (dict(gamma=1.5), "--gamma must be in (0, 1]"),
        (dict(rms_decay=0.0), "--rms-decay must be in (0, 1]"),
        (dict(rms_eps=0.0), "--rms-eps must be positive"),
        (dict(max_grad_norm=-0.5), "--max-grad-norm must be non-negative (0: no clipping)"),
        (dict(ent_coef=-0.01), "--ent-coef and --vf-coef must be non-negative"),
        (dict(env_id="CartPole-v1", env_backend="envpool"), "--env-backend envpool is for Atari ids"),
        (dict(env_id="ALE/Pong-v5"), "ALE/Pong-v5 skips frames (frameskip=4)"),
        (dict(env_id="Pong-v0"), "(p=0.25) on top of the 4-frame skip of the papers' wrappers; use PongNoFrameskip-v4"),
        (dict(learning_rate=float("inf")), "--learning-rate must be a finite number, got inf"),
    ],
)
def test_bad_settings_are_refused_before_training(overrides, message):
    with pytest.raises(a2c.ConfigError) as error:
        a2c.main(tiny(**overrides))
    assert message in str(error.value)
    assert not os.path.exists("run")  # nothing was written
