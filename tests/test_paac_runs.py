"""paac.py end to end with tiny budgets: the worker processes against in-process stepping, truncation,
real Atari on both engines with both networks, the engines' observations side by side, MinAtar,
presets, saving and evaluating, the worker processes' hygiene (the main process killed, SIGTERM to the
process group, too many of them) and bad input. The run contract shared by every script is in
test_run_contract.py."""

import dataclasses
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

import paac
from helpers import processes_in_group, read_episodes, returns_of, run_cli, script_path, wait_for


def tiny(preset: str = "classic", **overrides) -> paac.Args:
    """A run of a few batches: enough to exercise every code path, far too short to learn."""
    settings = dict(total_timesteps=400, num_envs=4, num_steps=5, eval_episodes=2, run_dir="run")
    settings.update(overrides)
    return dataclasses.replace(paac.PRESETS[preset], **settings)


def test_worker_processes_give_the_same_episodes_as_stepping_in_process():
    # 5 envs over 2 workers (3 + 2): the same seeds, the same order of finished episodes.
    for run_dir, workers in (("sync", 0), ("workers", 2)):
        paac.main(tiny(num_envs=5, num_workers=workers, total_timesteps=3000, eval_episodes=0, run_dir=run_dir))
    assert len(returns_of("sync")) > 20 and returns_of("sync") == returns_of("workers")


def test_truncated_episodes_bootstrap_from_their_final_observation(monkeypatch):
    # CartPole cut off at 10 steps, stepped by 2 workers: each truncated episode's final observation
    # comes back from its worker and its value is asked for.
    calls = []
    real = paac.nstep_returns

    def spy(rewards, next_value, terminated, truncated, final_values, gamma):
        calls.append((truncated.clone(), final_values.clone()))
        return real(rewards, next_value, terminated, truncated, final_values, gamma)

    monkeypatch.setattr(paac, "nstep_returns", spy)
    gym.register("TestShortCartPole-v1", entry_point="gymnasium.envs.classic_control:CartPoleEnv", max_episode_steps=10)
    paac.main(tiny(env_id="TestShortCartPole-v1", num_workers=2, total_timesteps=200, eval_episodes=0))
    truncations = [(tr, fv) for tr, fv in calls if tr.any()]
    assert truncations and all((fv[tr] != 0).all() for tr, fv in truncations)
    assert all(int(r["episodic_length"]) <= 10 for r in read_episodes("run"))


@pytest.mark.parametrize("backend", ["gymnasium", "envpool"])
@pytest.mark.parametrize("arch", ["nips", "nature"])
def test_real_atari_on_both_engines_with_both_networks(backend, arch):
    if backend == "envpool":
        pytest.importorskip("envpool")
    summary = paac.main(tiny("atari", env_backend=backend, arch=arch, num_workers=2, total_timesteps=200,
                             eval_episodes=0))
    assert summary["total_steps"] == 200 and summary["args"]["env_backend"] == backend
    assert summary["args"]["arch"] == arch


def test_auto_picks_envpool_for_atari_only():
    pytest.importorskip("envpool")
    assert paac.resolve_backend(paac.PRESETS["atari"]) == "envpool"
    assert paac.resolve_backend(paac.PRESETS["classic"]) == "gymnasium"


def test_both_engines_show_the_same_first_frames():
    # Same preprocessing on both engines: same spaces, and the first stacked frames of Breakout agree
    # but for resizing and greyscale rounding (measured: mean difference 0.33 grey levels, 0.6% of
    # pixels off by more than 8). The no-op starts are random on both and cannot be matched.
    pytest.importorskip("envpool")
    args = paac.PRESETS["atari"]
    gym_envs = paac.make_vector_env(dataclasses.replace(args, env_backend="gymnasium", num_workers=0), 1, "", 2)
    pool_envs = paac.make_vector_env(dataclasses.replace(args, env_backend="envpool"), 1, "", 2)
    assert gym_envs.single_observation_space == pool_envs.single_observation_space
    assert gym_envs.single_action_space == pool_envs.single_action_space
    a, b = gym_envs.reset(seed=1)[0].astype(int), pool_envs.reset(seed=1)[0].astype(int)
    gym_envs.close(), pool_envs.close()
    assert np.abs(a - b).mean() < 1 and (np.abs(a - b) > 8).mean() < 0.02


def test_minatar_channel_last_bool_observations():
    pytest.importorskip("minatar")
    summary = paac.main(tiny("minatar", total_timesteps=2000, eval_episodes=1))
    assert summary["total_steps"] == 2000 and read_episodes("run")


def test_save_model_then_evaluate_acts_the_same():
    args = tiny(save_model=True, eval_episodes=3, eval_deterministic=True, total_timesteps=1000)
    summary = paac.main(args)
    result = paac.main_evaluate(paac.EvalArgs("run/model.pt", episodes=3, seed=args.seed + 100_000, deterministic=True))
    assert result["mean_return"] == pytest.approx(summary["eval"]["mean_return"])


def test_presets_carry_the_papers_settings():
    args = paac.parse_args(["atari"])
    assert (args.num_envs, args.num_workers, args.num_steps, args.learning_rate) == (32, 8, 5, 0.0224)
    assert (args.rms_eps, args.rms_decay, args.max_grad_norm, args.ent_coef, args.gamma) == (0.1, 0.99, 3.0, 0.01, 0.99)
    assert args.total_timesteps == 80_000_000 and args.anneal and args.env_backend == "auto" and args.arch == "nips"
    assert paac.parse_args(["minatar", "--arch", "nature"]).arch == "nature"
    assert isinstance(paac.parse_args(["evaluate", "m.pt", "--episodes", "4"]), paac.EvalArgs)


def test_help_shows_the_preset_defaults():
    out = run_cli("paac", "atari", "--help")
    assert out.returncode == 0
    assert "--num-workers INT" in out.stdout and "(default: 0.0224)" in out.stdout


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(env_id="CartPol-v1"), "unknown environment id 'CartPol-v1'; did you mean CartPole-v1"),
        (dict(env_id="Pendulum-v1"), "supports Discrete action spaces only, not Box(-2.0, 2.0, (1,), float32); "
                                     "for continuous actions use ppo.py, trpo.py, ddpg.py, td3.py or sac.py"),
        (dict(learning_rate=0.0), "--learning-rate must be positive"),
        (dict(total_timesteps=5), "is less than one batch"),
        (dict(num_workers=5), "--num-workers must be between 0 and --num-envs (4), got 5"),
        (dict(num_workers=-1), "--num-workers must be between 0 and --num-envs"),
        (dict(loss_scale=0.0), "--loss-scale must be positive"),
        (dict(rms_decay=0.0), "--rms-decay must be in (0, 1]"),
        (dict(ent_coef=-0.01), "--ent-coef and --vf-coef must be non-negative"),
        (dict(env_id="CartPole-v1", env_backend="envpool"), "--env-backend envpool is for Atari ids"),
        (dict(env_id="ALE/Pong-v5"), "ALE/Pong-v5 skips frames (frameskip=4)"),
        (dict(env_id="Breakout-v4"), "; use BreakoutNoFrameskip-v4"),
        (dict(learning_rate=float("nan")), "--learning-rate must be a finite number, got nan"),
    ],
)
def test_bad_settings_are_refused_before_training(overrides, message):
    with pytest.raises(paac.ConfigError) as error:
        paac.main(tiny(**overrides))
    assert message in str(error.value)
    assert not os.path.exists("run")  # nothing was written


# --- the worker processes ------------------------------------------------------------------------


def start_in_own_group() -> subprocess.Popen:
    """A long run on 2 worker processes, in a process group of its own (as a shell, timeout or Slurm
    starts a job), once it is training."""
    process = subprocess.Popen([sys.executable, script_path("paac"), "--run-dir", "run", "--eval-episodes", "0",
                                "--num-envs", "4", "--num-workers", "2", "--total-timesteps", "10000000"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    wait_for(lambda: os.path.exists("run/episodes.csv") and len(read_episodes("run")) > 3, process)
    assert len(processes_in_group(process.pid)) == 3  # the main process and its two workers
    return process


def wait_until_gone(pgid: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while processes_in_group(pgid):
        assert time.time() < deadline, f"left running: {processes_in_group(pgid)}"
        time.sleep(0.1)


def test_killing_the_main_process_takes_its_workers_with_it():
    process = start_in_own_group()
    process.kill()  # SIGKILL: no handler runs, so the workers must notice by themselves
    process.wait()
    try:
        wait_until_gone(process.pid, timeout=5)
    finally:
        for pid in processes_in_group(process.pid):  # not left behind by a failing test
            os.kill(pid, signal.SIGKILL)
        process.stdout.close()


def test_sigterm_to_the_process_group_checkpoints_and_leaves_no_worker():
    process = start_in_own_group()
    os.killpg(process.pid, signal.SIGTERM)  # what timeout and Slurm send: the workers get it too
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "stopped by signal 15" in output and "--resume run" in output and "Traceback" not in output, output
    assert torch.load("run/checkpoint.pt", weights_only=True)["global_step"] > 0
    wait_until_gone(process.pid, timeout=5)


def test_a_refused_checkpoint_leaves_no_worker_behind():
    paac.main(tiny(num_workers=2, checkpoint_every=20, total_timesteps=100, eval_episodes=0))
    checkpoint = torch.load("run/checkpoint.pt", weights_only=True)
    checkpoint["args"]["env_id"] = "Acrobot-v1"  # another observation size: the weights do not fit
    torch.save(checkpoint, "run/checkpoint.pt")
    with pytest.raises(paac.ConfigError, match="does not fit this run of paac.py"):
        paac.main(paac.parse_args(["--resume", "run"]))
    assert not multiprocessing.active_children()
