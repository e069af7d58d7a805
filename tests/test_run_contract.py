"""The run contract that every script in algos/ keeps, checked the same way for each: the run directory,
saving and evaluating, video, wandb, determinism, kill-and-resume, SIGTERM, and one-line errors.
What is particular to one algorithm is tested in its own test_<algo>_*.py files."""

import glob
import importlib
import json
import os
import signal

import pytest
import torch

from helpers import read_episodes, returns_of, run_cli, start_run, wait_for

# For each script: flags for a tiny run, flags for a longer one that checkpoints often, the number of envs
# the longer one steps in parallel, and the module-level function that computes its loss. Runs are on
# CartPole-v1 unless the entry names another env (which its flags then select with --env-id), and the
# determinism check runs `determinism_steps` env steps (default 4096).
SMALL_NETS = ["--hidden-sizes", "32", "32", "--batch-size", "32", "--eval-every", "0"]
SCRIPTS = {
    "ppo": dict(
        tiny=["--total-timesteps", "512", "--num-steps", "128", "--minibatch-size", "64", "--update-epochs", "2"],
        long=["--total-timesteps", "16384", "--num-steps", "1024", "--checkpoint-every", "1024"],
        envs=1,
        loss="policy_loss",
    ),
    "reinforce": dict(
        tiny=["--total-timesteps", "300", "--episodes-per-update", "2"],
        long=["--baseline", "--total-timesteps", "12000", "--checkpoint-every", "1000"],
        envs=1,
        loss="policy_gradient_loss",
    ),
    "a2c_atari": dict(
        tiny=["--total-timesteps", "400", "--num-envs", "2", "--num-steps", "5"],
        long=["--total-timesteps", "40000", "--checkpoint-every", "1000"],
        envs=16,
        loss="actor_critic_loss",
    ),
    "ddpg": dict(
        env="Pendulum-v1",
        tiny=["--env-id", "Pendulum-v1", "--total-timesteps", "400", "--learning-starts", "100", *SMALL_NETS],
        long=["--env-id", "Pendulum-v1", "--total-timesteps", "3000", "--learning-starts", "300", *SMALL_NETS,
              "--checkpoint-every", "500"],
        envs=1,
        loss="critic_loss",
        determinism_steps=4400,
    ),
    "td3": dict(
        env="Pendulum-v1",
        tiny=["--env-id", "Pendulum-v1", "--total-timesteps", "400", "--learning-starts", "100", *SMALL_NETS],
        long=["--env-id", "Pendulum-v1", "--total-timesteps", "3000", "--learning-starts", "300", *SMALL_NETS,
              "--checkpoint-every", "500"],
        envs=1,
        loss="critic_loss",
        determinism_steps=4400,
    ),
}

# What the checks may assume of each env: the bounds of one step's reward and the longest episode.
ENVS = {
    "CartPole-v1": dict(reward=(1.0, 1.0), episode_steps=500),
    "Pendulum-v1": dict(reward=(-16.2736044, 0.0), episode_steps=200),  # -(pi^2 + 0.1 * 8^2 + 0.001 * 2^2)
}


def env_of(flags: dict) -> str:
    return flags.get("env", "CartPole-v1")


def possible_return(env_id: str, episodic_return: float, length: int | None = None) -> bool:
    """Whether a return could come from an episode of env_id (of that length, when given)."""
    low, high = ENVS[env_id]["reward"]
    lengths = [length] if length is not None else [1, ENVS[env_id]["episode_steps"]]
    return min(low * n for n in lengths) - 1e-6 <= episodic_return <= max(high * n for n in lengths) + 1e-6


@pytest.fixture(params=list(SCRIPTS))
def script(request):
    """(name, module, flags) of one script."""
    return request.param, importlib.import_module(request.param), SCRIPTS[request.param]


def train(module, *flags: str) -> dict:
    return module.main(module.parse_args(list(flags)))


def test_a_run_writes_its_directory_and_gives_back_the_callers_threads(script):
    name, module, flags = script
    torch.set_num_threads(2)
    summary = train(module, *flags["tiny"], "--run-dir", "run", "--eval-episodes", "2")
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    rows = read_episodes("run")
    env_id = env_of(flags)
    assert rows and list(rows[0]) == ["global_step", "episodic_return", "episodic_length", "wall_time"]
    assert all(possible_return(env_id, float(r["episodic_return"]), int(r["episodic_length"])) for r in rows)
    written = json.load(open("run/summary.json"))
    assert written == json.loads(json.dumps(summary))
    assert written["total_steps"] > 0 and written["sps"] > 0 and written["wall_time"] > 0
    assert written["args"]["env_id"] == env_id and "torch" in written["versions"]
    assert written["eval"]["episodes"] == 2 and possible_return(env_id, written["eval"]["mean_return"])
    assert glob.glob("run/events.out.tfevents.*")


def test_the_default_run_dir_follows_the_naming_scheme(script):
    name, module, flags = script
    train(module, *flags["tiny"], "--eval-episodes", "0", "--exp-name", "naming", "--seed", "3")
    (run_dir,) = glob.glob(f"runs/{env_of(flags)}__naming__3__*")
    assert os.path.isfile(os.path.join(run_dir, "summary.json"))


def test_save_model_then_evaluate_from_the_command_line(script):
    name, module, flags = script
    train(module, *flags["tiny"], "--run-dir", "run", "--eval-episodes", "0", "--save-model")
    assert torch.load("run/model.pt", weights_only=True)["args"]["env_id"] == env_of(flags)
    out = run_cli(name, "evaluate", "run/model.pt", "--episodes", "3")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["episodes"] == 3 and possible_return(env_of(flags), result["mean_return"])


def test_capture_video(script):
    name, module, flags = script
    train(module, *flags["tiny"], "--run-dir", "run", "--eval-episodes", "0", "--capture-video")
    assert glob.glob("run/videos/*.mp4")


def test_track_with_wandb_offline(script, monkeypatch):
    name, module, flags = script
    monkeypatch.setenv("WANDB_MODE", "offline")
    train(module, *flags["tiny"], "--run-dir", "run", "--eval-episodes", "0", "--track")
    assert glob.glob("run/wandb/offline-run-*")


def test_the_same_seed_gives_identical_episodes(script):
    name, module, flags = script
    for run_dir, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        train(module, *flags["long"], "--run-dir", run_dir, "--eval-episodes", "0", "--seed", seed,
              "--total-timesteps", str(flags.get("determinism_steps", 4096)))
    assert len(returns_of("a")) > 20
    assert returns_of("a") == returns_of("b")
    assert returns_of("a") != returns_of("c")


def test_resume_after_a_kill_ends_at_the_same_steps_without_duplicate_or_lost_episodes(script):
    name, module, flags = script
    uninterrupted = train(module, *flags["long"], "--run-dir", "whole", "--eval-episodes", "0")
    process = start_run(name, *flags["long"])

    def episodes_past_a_checkpoint():
        if not os.path.exists("run/checkpoint.pt"):
            return False
        saved = torch.load("run/checkpoint.pt", weights_only=True)["global_step"]  # renamed into place: whole
        return any(int(r["global_step"]) > saved for r in read_episodes("run"))

    # Kill it hard once a checkpoint exists and episodes beyond it have been written.
    wait_for(episodes_past_a_checkpoint, process)
    process.kill()
    process.wait()
    before = read_episodes("run")
    saved_step = torch.load("run/checkpoint.pt", weights_only=True)["global_step"]
    kept = [r for r in before if int(r["global_step"]) <= saved_step]
    assert 0 < saved_step < uninterrupted["total_steps"] and len(kept) < len(before)

    summary = train(module, "--resume", "run")
    assert summary["total_steps"] == uninterrupted["total_steps"]
    after = read_episodes("run")
    assert after[: len(kept)] == kept  # nothing from before the checkpoint was lost or altered
    # The killed run's episodes past the checkpoint were dropped, not duplicated: had they stayed, the
    # resumed run's first episodes would step back below them.
    steps = [int(r["global_step"]) for r in after]
    assert steps == sorted(steps)
    # The first episode after the checkpoint ends within one longest episode (per env) of it.
    assert saved_step < steps[len(kept)] <= saved_step + ENVS[env_of(flags)]["episode_steps"] * flags["envs"]


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(script):
    name, module, flags = script
    process = start_run(name, *flags["long"], "--total-timesteps", "10000000", "--checkpoint-every", "0")
    wait_for(lambda: os.path.exists("run/episodes.csv") and len(read_episodes("run")) > 5, process)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "stopped by signal" in output and "--resume run" in output
    assert torch.load("run/checkpoint.pt", weights_only=True)["global_step"] > 0
    assert not os.path.exists("run/summary.json")


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(script, monkeypatch):
    name, module, flags = script
    real_loss = getattr(module, flags["loss"])

    def poisoned(*args, **kwargs):
        """The real loss until a checkpoint exists, NaN from then on."""
        result = real_loss(*args, **kwargs)
        if not os.path.exists("run/checkpoint.pt"):
            return result
        if isinstance(result, tuple):
            return (result[0] * float("nan"), *result[1:])
        return result * float("nan")

    monkeypatch.setattr(module, flags["loss"], poisoned)
    with pytest.raises(FloatingPointError, match="the loss became nan"):
        train(module, *flags["tiny"], "--run-dir", "run", "--eval-episodes", "0", "--total-timesteps", "4096",
              "--checkpoint-every", "1")
    checkpoint = torch.load("run/checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] > 0
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    assert not os.path.exists("run/summary.json")


def test_resume_needs_a_readable_checkpoint(script):
    name, module, flags = script
    os.makedirs("empty")
    with pytest.raises(module.ConfigError, match="no checkpoint.pt there"):
        train(module, "--resume", "empty")
    os.makedirs("broken")
    with open("broken/checkpoint.pt", "wb") as f:
        f.write(b"not a checkpoint")
    with pytest.raises(module.ConfigError, match="checkpoint.pt is corrupt"):
        train(module, "--resume", "broken")


@pytest.mark.parametrize("flag, message", [
    (["--learning-rate", "-1"], "--learning-rate must be positive, got -1.0"),
    (["--env-id", "CartPol-v1"], "unknown environment id 'CartPol-v1'; did you mean CartPole-v1"),
    (["--gamma", "1.5"], "--gamma must be in (0, 1]"),
])
def test_the_command_line_refuses_bad_input_in_one_line(script, flag, message):
    name, module, flags = script
    out = run_cli(name, *flag, "--run-dir", "run")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(f"{name}.py: error: ") and message in out.stderr
    assert not os.path.exists("run")


def test_help(script):
    name, module, flags = script
    out = run_cli(name, "--help")
    assert out.returncode == 0 and "--env-id" in out.stdout and "--resume" in out.stdout
