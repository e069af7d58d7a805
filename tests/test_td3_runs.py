"""td3.py end to end with tiny budgets: real MuJoCo, periodic evaluation, presets, and the refusal of bad input.
The run contract shared by every script is in test_run_contract.py, the replay buffer across a kill and a
resume in test_off_policy_checkpoints.py."""

import dataclasses
import os

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import td3


def tiny(preset: str = "paper", **overrides) -> td3.Args:
    settings = dict(env_id="Pendulum-v1", total_timesteps=400, learning_starts=100, eval_episodes=0, eval_every=0,
                    run_dir="run")
    settings.update(overrides)
    return dataclasses.replace(td3.PRESETS[preset], **settings)


def test_hopper_smoke_with_the_paper_settings_prints_the_buffer_memory(capsys):
    summary = td3.main(tiny(env_id="Hopper-v5", total_timesteps=300, eval_episodes=1))
    assert summary["total_steps"] == 300 and summary["buffer_size"] == 300 and summary["learning_sps"] > 0
    assert summary["eval"]["episodes"] == 1
    # 11 observation numbers twice, 3 action numbers, reward and flag: 108 bytes, 103 MiB for 1M.
    out = capsys.readouterr().out
    assert "108 bytes a transition of Hopper-v5" in out and "1M transitions take 103 MiB; this run's 300 take" in out


def test_periodic_evaluation_is_logged_under_eval():
    summary = td3.main(tiny(total_timesteps=600, eval_every=200, eval_episodes=1, hidden_sizes=(32, 32)))
    assert [step for step, _, _ in summary["evaluations"]] == [200, 400, 600]  # [step, mean, std]
    events = EventAccumulator("run").Reload()
    assert [e.step for e in events.Scalars("eval/mean_return")] == [200, 400, 600, 600]  # the last: the final one
    assert [e.value for e in events.Scalars("eval/std_return")][:3] == [std for _, _, std in summary["evaluations"]]
    assert {"losses/qf_loss", "losses/actor_loss", "losses/qf_values", "charts/SPS"} <= set(events.Tags()["scalars"])


def test_presets_and_overrides_from_the_command_line():
    args = td3.parse_args(["--env-id", "Walker2d-v5"])
    assert args.preset == "paper" and args.hidden_sizes == (400, 300) and args.batch_size == 100
    assert (args.learning_rate, args.tau, args.policy_noise, args.noise_clip, args.policy_delay) == (1e-3, 0.005, 0.2, 0.5, 2)
    assert args.exploration_noise == 0.1 and args.learning_starts == 1_000
    args = td3.parse_args(["authors", "--learning-starts", "500"])
    assert args.preset == "authors" and args.hidden_sizes == (256, 256) and args.learning_rate == 3e-4
    assert args.batch_size == 256 and args.learning_starts == 500
    assert isinstance(td3.parse_args(["evaluate", "m.pt"]), td3.EvalArgs)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(env_id="CartPole-v1"), "td3.py needs a 1-D Box (continuous) action space, not Discrete(2); for discrete "
                                     "actions use ppo.py, a2c_atari.py or reinforce.py"),
        (dict(env_id="TestMultiBinaryActions-v0"), "needs a 1-D Box (continuous) action space, not MultiBinary"),
        (dict(tau=0.0), "--tau must be in (0, 1]"),
        (dict(policy_delay=0), "--policy-delay must be positive"),
        (dict(noise_clip=-0.5), "--noise-clip must be non-negative"),
        (dict(actor_learning_rate=-1e-3), "--actor-learning-rate must be positive"),
        (dict(batch_size=0), "--batch-size must be positive"),
        (dict(buffer_size=0), "--buffer-size must be positive"),
        (dict(hidden_sizes=()), "--hidden-sizes needs one or more positive sizes"),
        (dict(learning_starts=-1), "--learning-starts"),
    ],
)
def test_bad_settings_are_refused_before_training(overrides, message):
    with pytest.raises(td3.ConfigError) as error:
        td3.main(tiny(**overrides))
    assert message in str(error.value)
    assert not os.path.exists("run")
