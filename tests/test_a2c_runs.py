"""a2c_atari.py end to end with tiny budgets: the run contract, one-step actor-critic, real Atari on both
backends, MinAtar, saving and evaluating, determinism, checkpoint and resume, and bad input."""

import csv
import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

import a2c_atari as a2c
from conftest import ALGOS

SCRIPT = os.path.join(ALGOS, "a2c_atari.py")


def tiny(preset: str = "classic", **overrides) -> a2c.Args:
    """A run of a few batches: enough to exercise every code path, far too short to learn."""
    settings = dict(total_timesteps=400, num_envs=2, num_steps=5, eval_episodes=2, run_dir="run")
    settings.update(overrides)
    return dataclasses.replace(a2c.PRESETS[preset], **settings)


def read_episodes(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "episodes.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_cartpole_run_writes_the_run_directory():
    torch.set_num_threads(2)
    summary = a2c.main(tiny())
    assert torch.get_num_threads() == 2  # main ran on 1 thread and gave the caller its setting back
    torch.set_num_threads(1)
    assert summary["total_steps"] == 400
    rows = read_episodes("run")
    assert rows and list(rows[0]) == ["global_step", "episodic_return", "episodic_length", "wall_time"]
    assert all(float(r["episodic_return"]) == int(r["episodic_length"]) for r in rows)  # CartPole: +1 a step
    written = json.load(open("run/summary.json"))
    assert written["total_steps"] == 400 and written["sps"] > 0 and written["algo"] == "a2c_atari"
    assert written["args"]["env_id"] == "CartPole-v1" and "torch" in written["versions"]
    assert written["eval"]["episodes"] == 2 and written["eval"]["mean_return"] > 0
    assert glob.glob("run/events.out.tfevents.*")


def test_default_run_dir_follows_the_naming_scheme():
    a2c.main(tiny(run_dir=None, eval_episodes=0, exp_name="naming", seed=3))
    (run_dir,) = glob.glob("runs/CartPole-v1__naming__3__*")
    assert os.path.isfile(os.path.join(run_dir, "summary.json"))


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


def test_evaluate_from_the_command_line():
    a2c.main(tiny(save_model=True, eval_episodes=0))
    out = subprocess.run([sys.executable, SCRIPT, "evaluate", "run/model.pt", "--episodes", "3"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["episodes"] == 3 and result["mean_return"] > 0


def test_same_seed_gives_identical_episodes():
    def returns(run_dir, seed=1):
        a2c.main(tiny(run_dir=run_dir, total_timesteps=4000, num_envs=4, eval_episodes=0, seed=seed))
        return [(r["global_step"], r["episodic_return"]) for r in read_episodes(run_dir)]

    first, second = returns("a"), returns("b")
    assert len(first) > 20 and first == second
    assert returns("c", seed=2) != first


def test_presets_and_overrides_from_the_command_line():
    args = a2c.parse_args(["--env-id", "Acrobot-v1"])
    assert args.preset == "classic" and args.env_id == "Acrobot-v1"
    args = a2c.parse_args(["--preset", "atari", "--learning-rate", "1e-3"])
    assert (args.num_envs, args.num_steps, args.rms_eps, args.rms_decay) == (16, 5, 0.1, 0.99)
    assert args.learning_rate == 1e-3 and args.anneal and args.ent_coef == 0.01 and args.vf_coef == 0.5
    assert a2c.parse_args(["--preset=minatar"]).env_id == "MinAtar/Breakout-v1"
    assert isinstance(a2c.parse_args(["evaluate", "m.pt", "--episodes", "4"]), a2c.EvalArgs)


def test_help_shows_the_preset_defaults():
    out = subprocess.run([sys.executable, SCRIPT, "--preset", "atari", "--help"], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0
    assert "--rms-eps FLOAT" in out.stdout and "(default: 0.1)" in out.stdout


# --- checkpoint and resume ---------------------------------------------------------------------


def start_run(*flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, SCRIPT, "--run-dir", "run", "--eval-episodes", "0", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, process.stdout.read()
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_resume_after_a_kill_ends_at_the_same_steps_without_duplicate_or_lost_episodes():
    process = start_run("--total-timesteps", "40000", "--checkpoint-every", "1000")
    checkpoint = "run/checkpoint.pt"
    # Kill it hard once a checkpoint exists and episodes beyond it have been written.
    wait_for(lambda: os.path.exists(checkpoint) and len(read_episodes("run")) > 60, process)
    process.kill()
    process.wait()
    before = read_episodes("run")
    saved = torch.load(checkpoint, weights_only=True)
    saved_step = saved["global_step"]
    assert 0 < saved_step < 40000 and saved["optimizer"]["state"]  # the RMSProp statistics travel too

    summary = a2c.main(dataclasses.replace(a2c.PRESETS["classic"], resume="run"))
    assert summary["total_steps"] == 40000
    after = read_episodes("run")
    steps = [int(r["global_step"]) for r in after]
    assert steps == sorted(steps)
    kept = [r for r in before if int(r["global_step"]) <= saved_step]
    assert after[: len(kept)] == kept  # nothing from before the checkpoint was lost or altered
    # No row from after the checkpoint survives: every later row comes from the resumed run. (Two envs
    # can end identical episodes in the same step, so whole rows may legitimately repeat.)
    assert all(float(r["wall_time"]) >= float(kept[-1]["wall_time"]) for r in after[len(kept):])
    assert len(after) - len(kept) == len([r for r in after if int(r["global_step"]) > saved_step])
    assert saved_step < steps[len(kept)] <= saved_step + 8 * 500  # within one CartPole episode of 8 envs


def test_sigterm_saves_a_checkpoint_and_exits_cleanly():
    process = start_run("--total-timesteps", "10000000")
    wait_for(lambda: os.path.exists("run/episodes.csv") and len(read_episodes("run")) > 5, process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "stopped by signal" in output and "--resume run" in output
    checkpoint = torch.load("run/checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] % 40 == 0 and checkpoint["global_step"] > 0
    assert not os.path.exists("run/summary.json")


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(monkeypatch):
    real_loss, calls = a2c.actor_critic_loss, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss, *rest = real_loss(*args, **kwargs)
        return (loss * float("nan") if len(calls) > 2 else loss), *rest

    monkeypatch.setattr(a2c, "actor_critic_loss", poisoned)
    with pytest.raises(FloatingPointError, match="the loss became nan"):
        a2c.main(tiny(total_timesteps=100, checkpoint_every=10))
    checkpoint = torch.load("run/checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == 20
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(env_id="CartPol-v1"), "unknown environment id 'CartPol-v1'; did you mean CartPole-v1"),
        (dict(env_id="Pendulum-v1"), "supports Discrete action spaces only, not Box(-2.0, 2.0, (1,), float32); "
                                     "for continuous actions use ppo.py or sac.py"),
        (dict(learning_rate=0.0), "--learning-rate must be positive"),
        (dict(learning_rate=-7e-4), "--learning-rate must be positive"),
        (dict(total_timesteps=0), "must be positive"),
        (dict(num_steps=0), "must be positive"),
        (dict(total_timesteps=5), "is less than one batch"),
        (dict(gamma=1.5), "--gamma must be in (0, 1]"),
        (dict(rms_decay=0.0), "--rms-decay must be in (0, 1]"),
        (dict(rms_eps=0.0), "--rms-eps and --max-grad-norm must be positive"),
        (dict(ent_coef=-0.01), "--ent-coef and --vf-coef must be non-negative"),
        (dict(env_id="CartPole-v1", env_backend="envpool"), "--env-backend envpool is for Atari ids"),
    ],
)
def test_bad_settings_are_refused_before_training(overrides, message):
    with pytest.raises(a2c.ConfigError) as error:
        a2c.main(tiny(**overrides))
    assert message in str(error.value)
    assert not os.path.exists("run")  # nothing was written


def test_resume_without_a_checkpoint_is_refused():
    os.makedirs("empty")
    with pytest.raises(a2c.ConfigError, match="no checkpoint.pt there"):
        a2c.main(tiny(resume="empty"))


def test_resume_from_a_corrupt_checkpoint_is_refused():
    os.makedirs("broken")
    with open("broken/checkpoint.pt", "wb") as f:
        f.write(b"not a checkpoint")
    with pytest.raises(a2c.ConfigError, match="checkpoint.pt is corrupt"):
        a2c.main(tiny(resume="broken"))


def test_the_command_line_prints_one_line_and_no_traceback():
    out = subprocess.run([sys.executable, SCRIPT, "--env-id", "Pendulum-v1", "--run-dir", "run"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert out.stderr.strip().startswith("a2c_atari.py: error: a2c_atari.py supports Discrete action spaces only")
    assert "ppo.py or sac.py" in out.stderr and "Traceback" not in out.stderr
    assert not os.path.exists("run")
