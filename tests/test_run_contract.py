"""The run contract that every script in algos/ keeps, checked the same way for each: the run directory,
saving and evaluating, video, wandb, determinism, kill-and-resume, SIGTERM, and one-line errors.
What is particular to one algorithm is tested in its own test_<algo>_*.py files."""

import glob
import importlib
import json
import math
import os
import signal
import time

import gymnasium as gym
import pytest
import torch

from helpers import read_episodes, returns_of, run_cli, start_run, wait_for

# What the checks need to know of each env the scripts run on: the range of one step's reward (CartPole
# +1 a step; Pendulum -(theta^2 + 0.1 theta_dot^2 + 0.001 u^2), at most pi^2 + 0.1 * 8^2 + 0.001 * 2^2),
# and a budget that gives a script's long settings more than 20 episodes.
ENVS = {
    "CartPole-v1": dict(reward=(1.0, 1.0), steps_for_20_episodes=4096),
    "Pendulum-v1": dict(reward=(-(math.pi**2 + 6.4 + 0.004), 0.0), steps_for_20_episodes=4400),
}

# For each script: flags for a tiny run, flags for a longer one that checkpoints often, the number of envs
# the longer one steps in parallel, the module-level function that computes its loss, and the env of its
# runs (CartPole-v1 unless given: scripts for continuous actions only use Pendulum-v1).
# Optional, `preset`: the preset the runs use, the command's first word, where it is not the script's first.
# Optional, `repeatable`: flags added where two runs of one seed must give identical episodes, for
# scripts that repeat exactly only in some settings (Hogwild repeats with one worker, not with several).
# The off-policy scripts run with small networks and no periodic evaluation, to keep the suite fast.
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
    "trpo": dict(
        preset="classic",  # trpo.py's first preset is mujoco
        tiny=["--total-timesteps", "512", "--num-steps", "128"],
        long=["--total-timesteps", "16384", "--num-steps", "1024", "--checkpoint-every", "1024"],
        envs=1,
        loss="surrogate_loss",
    ),
    "sac": dict(
        tiny=["--total-timesteps", "600", "--learning-starts", "200", "--batch-size", "32", "--hidden-size", "32",
              "--eval-every", "0"],
        long=["--total-timesteps", "4000", "--learning-starts", "3000", "--batch-size", "32", "--hidden-size", "32",
              "--eval-every", "0", "--checkpoint-every", "400"],
        envs=1,
        loss="critic_loss",
        env="Pendulum-v1",
    ),
    # Hogwild workers race, so only a run with one worker repeats exactly and logs its episodes in step
    # order: the long runs (determinism, kill-and-resume, SIGTERM) use one, the tiny ones two.
    "async_q": dict(
        tiny=["--total-timesteps", "600", "--num-workers", "2"],
        long=["--total-timesteps", "20000", "--num-workers", "1", "--checkpoint-every", "1000"],
        envs=1,
        loss="q_loss",
    ),
    "a3c_hogwild": dict(
        tiny=["--total-timesteps", "400", "--num-workers", "2"],
        long=["--total-timesteps", "12000", "--num-workers", "2", "--checkpoint-every", "1000"],
        envs=2,
        loss="actor_critic_loss",
        repeatable=["--num-workers", "1"],
    ),
    "paac": dict(  # the long run steps its 32 envs in 2 worker processes, so killing and SIGTERM reach them
        tiny=["--total-timesteps", "400", "--num-envs", "2", "--num-steps", "5"],
        long=["--total-timesteps", "40000", "--checkpoint-every", "1000", "--num-workers", "2"],
        envs=32,
        loss="actor_critic_loss",
    ),
    "ddpg": dict(
        tiny=["--total-timesteps", "400", "--learning-starts", "100", *SMALL_NETS],
        long=["--total-timesteps", "3000", "--learning-starts", "300", *SMALL_NETS, "--checkpoint-every", "500"],
        envs=1,
        loss="critic_loss",
        env="Pendulum-v1",
    ),
    "td3": dict(
        tiny=["--total-timesteps", "400", "--learning-starts", "100", *SMALL_NETS],
        long=["--total-timesteps", "3000", "--learning-starts", "300", *SMALL_NETS, "--checkpoint-every", "500"],
        envs=1,
        loss="critic_loss",
        env="Pendulum-v1",
    ),
}

@pytest.fixture(params=list(SCRIPTS))
def script(request):
    """(name, module, flags) of one script; flags["env"] is its env id, flags["first"] the command's first words
    (the preset, if any) and flags["tiny"] and flags["long"] whole commands."""
    flags = {"env": "CartPole-v1", **SCRIPTS[request.param]}
    first = [flags["preset"]] if "preset" in flags else []
    env_flag = ["--env-id", flags["env"]]
    return request.param, importlib.import_module(request.param), {
        **flags, "first": first, "tiny": first + env_flag + flags["tiny"], "long": first + env_flag + flags["long"]}


def possible_return(env_id: str, episodic_return: float, length: int) -> bool:
    """Whether an episode of this length can have this return in env_id."""
    low, high = ENVS[env_id]["reward"]
    return low * length - 1e-6 <= episodic_return <= high * length + 1e-6


def possible_mean_return(env_id: str, mean_return: float) -> bool:
    """Whether this can be the mean return of some episodes of env_id, leaving out 0 (no steps, or nothing
    rewarded: a sign the episodes were not played)."""
    low, high = ENVS[env_id]["reward"]
    longest = gym.spec(env_id).max_episode_steps
    return min(low, 0) * longest - 1e-6 <= mean_return <= max(high, 0) * longest + 1e-6 and mean_return != 0


def train(module, *flags: str) -> dict:
    return module.main(module.parse_args(list(flags)))


def tensorboard_steps(run_dir: str) -> dict[str, list[int]]:
    """The steps of each scalar curve as TensorBoard shows them (it applies the writers' purge_step)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [event.step for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_a_run_writes_its_directory_and_gives_back_the_callers_threads(script):
    name, module, flags = script
    torch.set_num_threads(2)
    summary = train(module, *flags["tiny"], "--run-dir", "run", "--eval-episodes", "2")
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    rows = read_episodes("run")
    assert rows and list(rows[0]) == ["global_step", "episodic_return", "episodic_length", "wall_time"]
    assert all(possible_return(flags["env"], float(r["episodic_return"]), int(r["episodic_length"])) for r in rows)
    written = json.load(open("run/summary.json"))
    assert written == json.loads(json.dumps(summary))
    # wall_time is rounded to 0.1 s, so a tiny run may show 0.0
    assert written["total_steps"] > 0 and written["sps"] > 0 and written["wall_time"] >= 0
    assert written["args"]["env_id"] == flags["env"] and "torch" in written["versions"]
    assert written["eval"]["episodes"] == 2 and possible_mean_return(flags["env"], written["eval"]["mean_return"])
    assert glob.glob("run/events.out.tfevents.*")


def test_the_default_run_dir_follows_the_naming_scheme(script):
    name, module, flags = script
    train(module, *flags["tiny"], "--eval-episodes", "0", "--exp-name", "naming", "--seed", "3")
    (run_dir,) = glob.glob(f"runs/{flags['env']}__naming__3__*")
    assert os.path.isfile(os.path.join(run_dir, "summary.json"))


def test_a_default_run_dir_already_taken_gets_a_suffix_and_the_other_is_left_alone(script):
    """Two runs with one name in one second (two commands, or main() twice) must not share a directory: the
    default name is claimed with os.mkdir, and a taken one gets -2. A run that never starts gives its back."""
    name, module, flags = script
    now = int(time.time())
    taken = [f"runs/{flags['env']}__clash__3__{second}" for second in range(now, now + 120)]
    for run_dir in taken:
        os.makedirs(run_dir)
        with open(os.path.join(run_dir, "other.txt"), "w") as f:
            f.write("another run's")
    train(module, *flags["tiny"], "--eval-episodes", "0", "--exp-name", "clash", "--seed", "3")
    (run_dir,) = glob.glob(f"runs/{flags['env']}__clash__3__*-2")
    assert os.path.isfile(os.path.join(run_dir, "summary.json"))
    assert all(os.listdir(d) == ["other.txt"] and open(os.path.join(d, "other.txt")).read() == "another run's"
               for d in taken)
    with module.Run(module.parse_args([*flags["tiny"], "--exp-name", "unstarted"]), None):
        pass
    assert not glob.glob("runs/*unstarted*")


def test_save_model_then_evaluate_from_the_command_line(script):
    name, module, flags = script
    train(module, *flags["tiny"], "--run-dir", "run", "--eval-episodes", "0", "--save-model")
    assert torch.load("run/model.pt", weights_only=True)["args"]["env_id"] == flags["env"]
    out = run_cli(name, "evaluate", "run/model.pt", "--episodes", "3")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["episodes"] == 3 and possible_mean_return(flags["env"], result["mean_return"])


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
              "--total-timesteps", str(ENVS[flags["env"]]["steps_for_20_episodes"]), *flags.get("repeatable", []))
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

    # Kill it hard once a checkpoint exists and episodes beyond it have been written. The run may pass
    # another checkpoint between the look and the kill, so it is frozen first and looked at again.
    while True:
        wait_for(episodes_past_a_checkpoint, process)
        process.send_signal(signal.SIGSTOP)
        if episodes_past_a_checkpoint():
            break
        process.send_signal(signal.SIGCONT)
    process.kill()
    process.wait()
    before = read_episodes("run")
    saved_step = torch.load("run/checkpoint.pt", weights_only=True)["global_step"]
    kept = [r for r in before if int(r["global_step"]) <= saved_step]
    assert 0 < saved_step < uninterrupted["total_steps"] and len(kept) < len(before)
    with open("run/checkpoint.pt.tmp", "wb"):  # what a kill during a save leaves behind
        pass

    summary = train(module, "--resume", "run")
    assert not glob.glob("run/*.tmp")
    # TensorBoard shows each step once: what the killed attempt logged past its checkpoint is purged, so
    # every curve's steps only go forward.
    for tag, steps in tensorboard_steps("run").items():
        assert steps == sorted(steps), (tag, steps)
    assert summary["total_steps"] == uninterrupted["total_steps"]
    after = read_episodes("run")
    assert after[: len(kept)] == kept  # nothing from before the checkpoint was lost or altered
    # The killed run's episodes past the checkpoint were dropped, not duplicated: had they stayed, the
    # resumed run's first episodes would step back below them.
    steps = [int(r["global_step"]) for r in after]
    assert steps == sorted(steps)
    # The first episode after the checkpoint ends within one episode's time limit (per env) of it.
    assert saved_step < steps[len(kept)] <= saved_step + gym.spec(flags["env"]).max_episode_steps * flags["envs"]


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


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(script, monkeypatch, capfd):
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
    # Through the command line: one line that says what diverged, where, and which checkpoint is safe.
    with pytest.raises(SystemExit) as exit_info:
        module.cli([*flags["tiny"], "--run-dir", "run", "--eval-episodes", "0", "--total-timesteps", "4096",
                    "--checkpoint-every", "1"])
    message = exit_info.value.code
    assert isinstance(message, str) and "\n" not in message and message.startswith(f"{name}.py: stopped: ")
    assert "the loss became nan at step" in message and "--resume run" in message
    assert "Traceback" not in capfd.readouterr().err  # no worker process printed one either
    checkpoint = torch.load("run/checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] > 0
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    assert not os.path.exists("run/summary.json")


def test_a_resume_waits_past_the_second_of_the_last_event_file(script):
    # TensorBoard reads event files in name order, and a name starts with the second it was made: a killed
    # attempt's file from this very second could be read after the resumed run's, escaping its purge_step.
    name, module, flags = script
    now = int(time.time())
    open(f"events.out.tfevents.{now}.host.99999.0", "w").close()
    module.wait_past_event_files(".")
    assert time.time() >= now + 1


def test_nothing_is_saved_with_nan_or_inf(script):
    name, module, flags = script
    module.save_torch({"model": {"weight": torch.ones(3)}, "step": 1}, "model.pt")
    for bad in (float("nan"), float("inf")):
        with pytest.raises(FloatingPointError, match="model.pt would hold nan or inf"):
            module.save_torch({"model": {"weight": torch.tensor([1.0, bad])}, "step": 2}, "model.pt")
    assert torch.load("model.pt", weights_only=True)["step"] == 1  # the good file is kept
    assert not glob.glob("*.tmp")


def test_resume_needs_a_readable_checkpoint(script):
    name, module, flags = script
    os.makedirs("empty")
    with pytest.raises(module.ConfigError, match="no checkpoint.pt there"):
        train(module, "--resume", "empty")
    os.makedirs("broken")
    with open("broken/checkpoint.pt", "wb") as f:
        f.write(b"not a checkpoint")
    with pytest.raises(module.ConfigError, match="checkpoint.pt is not a checkpoint or model of"):
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
