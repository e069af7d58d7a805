"""ddpg.py end to end with tiny budgets: real MuJoCo, both presets and both kinds of noise, and the refusal of
bad input. The run contract shared by every script is in test_run_contract.py, the replay buffer across a
kill and a resume in test_off_policy_checkpoints.py."""

import dataclasses
import os

import pytest

import ddpg


def tiny(preset: str = "paper", **overrides) -> ddpg.Args:
    settings = dict(env_id="Pendulum-v1", total_timesteps=400, learning_starts=100, eval_episodes=0, eval_every=0,
                    run_dir="run")
    settings.update(overrides)
    return dataclasses.replace(ddpg.PRESETS[preset], **settings)


@pytest.mark.parametrize("preset", ["paper", "our-ddpg"])
def test_hopper_smoke_with_each_preset_prints_the_buffer_memory(preset, capsys):
    summary = ddpg.main(tiny(preset, env_id="Hopper-v5", total_timesteps=300, eval_episodes=1))
    assert summary["total_steps"] == 300 and summary["buffer_size"] == 300 and summary["learning_sps"] > 0
    assert summary["eval"]["episodes"] == 1
    out = capsys.readouterr().out
    assert "108 bytes a transition of Hopper-v5" in out and "1M transitions take 103 MiB; this run's 300 take" in out


def test_presets_and_overrides_from_the_command_line():
    args = ddpg.parse_args([])
    assert args.preset == "paper" and args.hidden_sizes == (400, 300) and args.critic_action_layer == 2
    assert (args.learning_rate, args.actor_learning_rate, args.critic_weight_decay) == (1e-3, 1e-4, 1e-2)
    assert (args.tau, args.batch_size, args.exploration, args.exploration_noise, args.ou_theta) == (0.001, 64, "ou", 0.2, 0.15)
    assert args.final_layer_init == 3e-3
    args = ddpg.parse_args(["our-ddpg", "--tau", "0.01"])
    assert args.preset == "our-ddpg" and args.critic_action_layer == 1 and args.actor_learning_rate == 1e-3 and args.critic_weight_decay == 0
    assert (args.tau, args.batch_size, args.exploration, args.exploration_noise) == (0.01, 100, "gaussian", 0.1)
    assert args.final_layer_init is None and args.learning_starts == 1_000


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(env_id="MountainCar-v0"), "ddpg.py needs a 1-D Box (continuous) action space, not Discrete(3); for "
                                        "discrete actions use ppo.py, a2c_atari.py or reinforce.py"),
        (dict(critic_action_layer=3), "--critic-action-layer must be a hidden layer, 1 to 2, got 3"),
        (dict(ou_theta=1.5), "--ou-theta must be in [0, 1]"),
        (dict(critic_weight_decay=-0.01), "--critic-weight-decay must be non-negative"),
        (dict(final_layer_init=0.0), "--final-layer-init must be positive"),
        (dict(tau=1.5), "--tau must be in (0, 1]"),
    ],
)
def test_bad_settings_are_refused_before_training(overrides, message):
    with pytest.raises(ddpg.ConfigError) as error:
        ddpg.main(tiny(**overrides))
    assert message in str(error.value)
    assert not os.path.exists("run")
