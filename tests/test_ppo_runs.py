"""ppo.py end to end with tiny budgets: the run contract, the environment families, saving and
evaluating, determinism, checkpoint and resume, and the refusal of bad input."""

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

import ppo
from conftest import ALGOS

SCRIPT = os.path.join(ALGOS, "ppo.py")


def tiny(preset: str = "classic", **overrides) -> ppo.Args:
    """A run of a few batches: enough to exercise every code path, far too short to learn."""
    settings = dict(total_timesteps=512, num_steps=128, minibatch_size=64, update_epochs=2, eval_episodes=2,
                    run_dir="run")
    settings.update(overrides)
    return dataclasses.replace(ppo.PRESETS[preset], **settings)


def read_episodes(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "episodes.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_cartpole_run_writes_the_run_directory():
    torch.set_num_threads(2)
    summary = ppo.main(tiny(num_envs=2))
    assert torch.get_num_threads() == 2  # ppo.main ran on 1 thread and gave the caller its setting back
    torch.set_num_threads(1)
    assert summary["total_steps"] == 512
    rows = read_episodes("run")
    assert rows and list(rows[0]) == ["global_step", "episodic_return", "episodic_length", "wall_time"]
    assert all(float(r["episodic_return"]) == int(r["episodic_length"]) for r in rows)  # CartPole: +1 a step
    written = json.load(open("run/summary.json"))
    assert written["total_steps"] == 512 and written["sps"] > 0
    assert written["args"]["env_id"] == "CartPole-v1" and "torch" in written["versions"]
    assert written["eval"]["episodes"] == 2 and written["eval"]["mean_return"] > 0
    assert glob.glob("run/events.out.tfevents.*")


def test_default_run_dir_follows_the_naming_scheme():
    ppo.main(tiny(run_dir=None, eval_episodes=0, exp_name="naming", seed=3))
    (run_dir,) = glob.glob("runs/CartPole-v1__naming__3__*")
    assert os.path.isfile(os.path.join(run_dir, "summary.json"))


def test_pendulum_continuous_actions_with_normalisation():
    summary = ppo.main(tiny("mujoco", env_id="Pendulum-v1", eval_episodes=1))
    assert summary["eval"]["mean_return"] < 0  # Pendulum's rewards are all negative


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


def test_evaluate_from_the_command_line():
    ppo.main(tiny(save_model=True, eval_episodes=0))
    out = subprocess.run([sys.executable, SCRIPT, "evaluate", "run/model.pt", "--episodes", "3"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["episodes"] == 3 and result["mean_return"] > 0


def test_capture_video():
    ppo.main(tiny(capture_video=True, eval_episodes=0))
    assert glob.glob("run/videos/*.mp4")


def test_track_with_wandb_offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    ppo.main(tiny(track=True, eval_episodes=0))
    assert glob.glob("run/wandb/offline-run-*")


def test_same_seed_gives_identical_episodes():
    def returns(run_dir):
        ppo.main(tiny(run_dir=run_dir, total_timesteps=4096, num_steps=512, eval_episodes=0))
        return [(r["global_step"], r["episodic_return"]) for r in read_episodes(run_dir)]

    first, second = returns("a"), returns("b")
    assert len(first) > 20 and first == second
    ppo.main(tiny(run_dir="c", total_timesteps=4096, num_steps=512, eval_episodes=0, seed=2))
    assert [(r["global_step"], r["episodic_return"]) for r in read_episodes("c")] != first


def test_presets_and_overrides_from_the_command_line():
    args = ppo.parse_args(["--env-id", "Acrobot-v1"])
    assert args.preset == "classic" and args.env_id == "Acrobot-v1" and args.num_steps == 2048
    args = ppo.parse_args(["--preset", "atari", "--learning-rate", "1e-3"])
    assert (args.num_envs, args.num_steps, args.update_epochs, args.minibatch_size) == (8, 128, 3, 256)
    assert args.learning_rate == 1e-3 and args.anneal and args.clip_coef == 0.1 and args.ent_coef == 0.01
    args = ppo.parse_args(["--preset=mujoco"])
    assert args.normalize_obs and args.normalize_reward and args.total_timesteps == 1_000_000
    assert isinstance(ppo.parse_args(["evaluate", "m.pt", "--episodes", "4"]), ppo.EvalArgs)


def test_help_shows_the_preset_defaults():
    out = subprocess.run([sys.executable, SCRIPT, "--preset", "atari", "--help"], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0
    assert "--learning-rate FLOAT" in out.stdout and "(default: 0.00025)" in out.stdout


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
    process = start_run("--total-timesteps", "16384", "--num-steps", "1024", "--checkpoint-every", "1024")
    checkpoint = "run/checkpoint.pt"
    # Kill it hard once a checkpoint exists and episodes beyond it have been written.
    wait_for(lambda: os.path.exists(checkpoint) and len(read_episodes("run")) > 30, process)
    process.kill()
    process.wait()
    before = read_episodes("run")
    saved_step = torch.load(checkpoint, weights_only=True)["global_step"]
    assert 0 < saved_step < 16384

    summary = ppo.main(dataclasses.replace(ppo.PRESETS["classic"], resume="run"))
    assert summary["total_steps"] == 16384
    after = read_episodes("run")
    steps = [int(r["global_step"]) for r in after]
    assert steps == sorted(steps)
    assert len({tuple(r.values()) for r in after}) == len(after)  # no duplicate row
    kept = [r for r in before if int(r["global_step"]) <= saved_step]
    assert after[: len(kept)] == kept  # nothing from before the checkpoint was lost or altered
    # The first episode after the checkpoint ends within one CartPole episode (500 steps) of it.
    assert saved_step < steps[len(kept)] <= saved_step + 500


def test_sigterm_saves_a_checkpoint_and_exits_cleanly():
    process = start_run("--total-timesteps", "10000000", "--num-steps", "512")
    wait_for(lambda: os.path.exists("run/episodes.csv") and len(read_episodes("run")) > 5, process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "stopped by signal" in output and "--resume run" in output
    checkpoint = torch.load("run/checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] % 512 == 0 and checkpoint["global_step"] > 0
    assert not os.path.exists("run/summary.json")


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(monkeypatch):
    real_policy_loss, calls = ppo.policy_loss, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss, kl, clip_fraction = real_policy_loss(*args, **kwargs)
        # 2 epochs x 2 minibatches and 1 measurement per batch: call 11 is the third batch's first update.
        return (loss * float("nan") if len(calls) > 10 else loss), kl, clip_fraction

    monkeypatch.setattr(ppo, "policy_loss", poisoned)
    with pytest.raises(FloatingPointError, match="the loss became nan"):
        ppo.main(tiny(total_timesteps=1024, checkpoint_every=128, update_epochs=2))
    checkpoint = torch.load("run/checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == 256
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())


# --- bad input -------------------------------------------------------------------------------------


class MultiBinaryActions(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (3,))
    action_space = gym.spaces.MultiBinary(2)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, seed=None, options=None):
        return np.zeros(3, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(3, dtype=np.float32), 0.0, False, False, {}


gym.register("TestMultiBinaryActions-v0", entry_point=MultiBinaryActions)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(env_id="CartPol-v1"), "unknown environment id 'CartPol-v1'; did you mean CartPole-v1"),
        (dict(env_id="TestMultiBinaryActions-v0"), "supports Discrete and 1-D Box action spaces, not MultiBinary"),
        (dict(num_steps=100, minibatch_size=64), "does not divide into minibatches of --minibatch-size 64"),
        (dict(learning_rate=0.0), "--learning-rate must be positive"),
        (dict(learning_rate=-3e-4), "--learning-rate must be positive"),
        (dict(total_timesteps=0), "must be positive"),
        (dict(total_timesteps=100), "is less than one batch"),
        (dict(gamma=1.5), "--gamma must be in (0, 1]"),
        (dict(gamma=0.0), "--gamma must be in (0, 1]"),
        (dict(gae_lambda=-0.1), "--gae-lambda must be in (0, 1]"),
        (dict(env_id="CartPole-v1", env_backend="envpool"), "--env-backend envpool is for Atari ids"),
    ],
)
def test_bad_settings_are_refused_before_training(overrides, message):
    with pytest.raises(ppo.ConfigError) as error:
        ppo.main(tiny(**overrides))
    assert message in str(error.value)
    assert not os.path.exists("run")  # nothing was written


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    os.makedirs("empty")
    with pytest.raises(ppo.ConfigError, match="no checkpoint.pt there"):
        ppo.main(tiny(resume="empty"))


def test_resume_from_a_corrupt_checkpoint_is_refused():
    os.makedirs("broken")
    with open("broken/checkpoint.pt", "wb") as f:
        f.write(b"not a checkpoint")
    with pytest.raises(ppo.ConfigError, match="checkpoint.pt is corrupt"):
        ppo.main(tiny(resume="broken"))


def test_the_command_line_prints_one_line_and_no_traceback():
    out = subprocess.run([sys.executable, SCRIPT, "--learning-rate", "-1", "--run-dir", "run"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert out.stderr.strip() == "ppo.py: error: --learning-rate must be positive, got -1.0"
    assert not os.path.exists("run")
