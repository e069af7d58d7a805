"""async_q.py end to end with tiny budgets: each method, shared Adam, truncation, a real Atari env,
saving and evaluating, process hygiene (after a run, a worker's crash, a killed worker, Ctrl-C), presets
and bad input. The run contract shared by every script is in test_run_contract.py."""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import pytest
import torch

import async_q as aq
from helpers import ALGOS, children_of, read_episodes, run_cli, script_path, wait_for


def tiny(preset: str = "classic", **overrides) -> aq.Args:
    """A run of a few hundred steps on 2 workers: every code path, far too short to learn."""
    settings = dict(total_timesteps=600, num_workers=2, eval_episodes=2, run_dir="run")
    settings.update(overrides)
    return dataclasses.replace(aq.PRESETS[preset], **settings)


def no_children_left(timeout: float = 5.0) -> bool:
    deadline = time.time() + timeout
    while children_of(os.getpid()) and time.time() < deadline:
        time.sleep(0.05)
    return not children_of(os.getpid())


def process_exists(pid: int) -> bool:
    """True while pid runs (a zombie, dead but not yet reaped by its parent, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_episodes_are_written_in_global_step_order_with_several_workers():
    # Each episode is written at the global step of its last step, once no worker can report an earlier one.
    aq.main(tiny(total_timesteps=2000, num_workers=3, eval_episodes=0, checkpoint_every=500))
    steps = [int(r["global_step"]) for r in read_episodes("run")]
    assert len(steps) > 20 and steps == sorted(steps) and steps[-1] <= 2000
    assert sum(int(r["episodic_length"]) for r in read_episodes("run")) <= 2000  # no step in two episodes


@pytest.mark.parametrize("method", ["one-step-q", "one-step-sarsa", "n-step-q"])
def test_each_method_runs_to_the_exact_step_count_and_leaves_no_processes(method):
    summary = aq.main(tiny(method=method, target_update=100))
    assert summary["total_steps"] == 600 and summary["method"] == method and summary["sps"] > 0
    rows = read_episodes("run")
    assert rows and all(0 < int(r["global_step"]) <= 600 for r in rows)
    assert no_children_left()


def test_shared_adam_runs():
    summary = aq.main(tiny(optimizer="adam", method="n-step-q"))
    assert summary["total_steps"] == 600 and summary["args"]["optimizer"] == "adam"


def test_the_async_update_interval_may_not_divide_the_budget():
    # 7 steps per update: the last claimed segment is cut to what is left of the budget.
    assert aq.main(tiny(async_update=7, total_timesteps=500, num_workers=3, eval_episodes=0))["total_steps"] == 500


def test_truncated_episodes_bootstrap_from_their_final_observation(monkeypatch):
    # CartPole cut off at 10 steps: every episode that lasts that long is truncated. The workers (forked,
    # so they run the spy) write what the n-step targets were given.
    real = aq.nstep_q_targets

    def spy(rewards, bootstrap, terminated, truncated, gamma):
        with open(f"spy.{os.getpid()}", "a") as f:
            for t in range(len(rewards)):
                if truncated[t] and not terminated[t]:
                    f.write(f"{bootstrap[t].item()}\n")
        return real(rewards, bootstrap, terminated, truncated, gamma)

    monkeypatch.setattr(aq, "nstep_q_targets", spy)
    gym.register("TestShortCartPole-v1", entry_point="gymnasium.envs.classic_control:CartPoleEnv", max_episode_steps=10)
    aq.main(tiny(method="n-step-q", env_id="TestShortCartPole-v1", total_timesteps=400, eval_episodes=0))
    values = [float(line) for name in os.listdir(".") if name.startswith("spy.") for line in open(name)]
    assert values and all(v != 0 for v in values)  # the target network's max Q of the final observation
    assert all(int(r["episodic_length"]) <= 10 for r in read_episodes("run"))


def test_real_atari_env():
    summary = aq.main(tiny("atari", num_workers=1, total_timesteps=200, eval_episodes=1))
    assert summary["total_steps"] == 200
    # Whole games, true scores: Breakout's score is a non-negative whole number.
    assert summary["eval"]["mean_return"] >= 0 and float(summary["eval"]["mean_return"]).is_integer()
    assert no_children_left()


def test_save_model_then_evaluate_acts_greedily_and_the_same():
    args = tiny(save_model=True, eval_episodes=3, total_timesteps=1000)
    summary = aq.main(args)
    assert summary["eval"]["deterministic"]
    result = aq.main_evaluate(aq.EvalArgs("run/model.pt", episodes=3, seed=args.seed + 100_000))
    assert result["mean_return"] == pytest.approx(summary["eval"]["mean_return"])
    # Greedy play is a function of the observation: the same seed gives the same returns.
    assert aq.main_evaluate(aq.EvalArgs("run/model.pt", episodes=3, seed=7)) == aq.main_evaluate(
        aq.EvalArgs("run/model.pt", episodes=3, seed=7))


# --- process hygiene -------------------------------------------------------------------------------

# Worker 1 raises at its fourth update. The workers are forked, so they run the patched update; the same lines
# patch it for a run from the command line.
CRASH_WORKER_1 = """
import multiprocessing
real_update, updates = aq.update, []

def crash_in_worker_1(*args, **kwargs):
    if multiprocessing.current_process().name == "async_q-worker-1":
        updates.append(1)
        if len(updates) == 4:
            raise RuntimeError("simulated crash of worker 1")
    return real_update(*args, **kwargs)

aq.update = crash_in_worker_1
"""


def test_a_crashing_worker_stops_the_run_within_seconds_with_its_error(monkeypatch, capfd):
    monkeypatch.setattr(aq, "update", aq.update)  # put back after the test
    exec(CRASH_WORKER_1, {"aq": aq})
    start = time.time()
    with pytest.raises(aq.WorkerFailed, match="worker 1 raised RuntimeError: simulated crash of worker 1"):
        aq.main(tiny(total_timesteps=1_000_000, eval_episodes=0))
    err = capfd.readouterr().err
    assert "async_q.py worker 1 failed:" in err and "Traceback" in err  # the worker's own traceback
    assert time.time() - start < 30
    assert no_children_left()
    assert not os.path.exists("run/summary.json")


def start(*flags: str, patch: str = "") -> subprocess.Popen:
    """The script in a session of its own, as from a shell, so that the test can signal its whole group; with
    patch, a program that runs it after `patch` (code that may replace its functions)."""
    argv = ["--run-dir", "run", "--eval-episodes", "0", "--num-workers", "2", "--total-timesteps", "10000000", *flags]
    program = [script_path("async_q")] if not patch else ["-c", (
        f"import sys; sys.path.insert(0, {ALGOS!r}); import async_q as aq\n{patch}\naq.cli({argv!r})")]
    return subprocess.Popen([sys.executable, *program, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def running_workers(process: subprocess.Popen) -> list[int]:
    wait_for(lambda: os.path.exists("run/episodes.csv") and len(read_episodes("run")) > 5, process)
    workers = children_of(process.pid)
    assert len(workers) >= 2  # the two workers (and possibly multiprocessing's resource tracker)
    return workers


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_whole_group_checkpoints_and_stops_every_process(sig):
    # Ctrl-C in a terminal signals the whole foreground group; so do `timeout` and cluster schedulers
    # with SIGTERM. The workers leave it to the main process, which checkpoints first.
    process = start()
    workers = running_workers(process)
    os.killpg(process.pid, sig)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "--resume run" in output
    saved_step = torch.load("run/checkpoint.pt", weights_only=True)["global_step"]
    assert saved_step > 0
    # The step it reports is the checkpoint's: the workers stop at the checkpoint instead of going on.
    assert f"stopped by signal {int(sig)} at step {saved_step};" in output
    time.sleep(0.5)
    assert not any(process_exists(pid) for pid in workers)


def test_a_worker_killed_from_outside_stops_the_run():
    process = start()
    victim, *others = running_workers(process)
    os.kill(victim, signal.SIGKILL)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1 and "died with exit code -9" in output
    time.sleep(0.5)
    assert not any(process_exists(pid) for pid in others)


def test_killing_the_main_process_takes_the_workers_with_it():
    process = start()
    workers = running_workers(process)
    process.kill()
    process.wait()
    deadline = time.time() + 10
    while any(process_exists(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(process_exists(pid) for pid in workers)


def test_a_worker_crash_from_the_command_line_prints_its_error():
    process = start(patch=CRASH_WORKER_1)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "worker 1 failed" in output and "simulated crash of worker 1" in output


# --- the number of processes and a diverged loss ----------------------------------------------------


# --- checkpoint and resume ---------------------------------------------------------------------


def test_resume_keeps_each_workers_final_epsilon():
    aq.main(tiny(total_timesteps=2000, num_workers=3, checkpoint_every=500, eval_episodes=0))
    saved = torch.load("run/checkpoint.pt", weights_only=True)
    epsilons = [w["final_epsilon"] for w in saved["workers"]]
    assert len(epsilons) == 3 and set(epsilons) <= {0.1, 0.01, 0.5}
    assert saved["global_step"] == 2000 and set(saved) >= {"model", "target", "optimizer", "workers"}
    assert all(value.numel() for value in saved["optimizer"]["state"][0].values())


# --- presets and bad input ---------------------------------------------------------------------


def test_presets_and_overrides_from_the_command_line():
    args = aq.parse_args(["--method", "n-step-q"])
    assert args.preset == "classic" and args.method == "n-step-q" and args.num_workers == 16
    args = aq.parse_args(["atari", "--num-workers", "8"])
    assert (args.num_workers, args.async_update, args.target_update, args.rms_eps, args.rms_decay) == (8, 5, 10_000, 0.1, 0.99)
    assert args.epsilon_anneal_steps == 1_000_000 and args.learning_rate == 7e-4 and args.anneal
    assert isinstance(aq.parse_args(["evaluate", "m.pt", "--episodes", "4"]), aq.EvalArgs)


def test_help_names_the_methods():
    out = run_cli("async_q", "--help")
    assert out.returncode == 0 and "one-step-sarsa" in out.stdout and "--num-workers" in out.stdout


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(env_id="CartPol-v1"), "unknown environment id 'CartPol-v1'; did you mean CartPole-v1"),
        (dict(env_id="Pendulum-v1"), "supports Discrete action spaces only, not Box(-2.0, 2.0, (1,), float32); "
                                     "for continuous actions use ddpg.py, td3.py, sac.py, ppo.py or trpo.py"),
        (dict(env_id="TestMultiBinaryActions-v0"), "supports Discrete action spaces only, not MultiBinary(2)"),
        (dict(learning_rate=0.0), "--learning-rate must be positive, got 0.0"),
        (dict(num_workers=0), "--num-workers must be positive, got 0"),
        (dict(async_update=0), "--async-update must be positive, got 0"),
        (dict(target_update=0), "--target-update must be positive, got 0"),
        (dict(epsilon_anneal_steps=0), "--epsilon-anneal-steps must be positive, got 0"),
        (dict(gamma=0.0), "--gamma must be in (0, 1]"),
        (dict(rms_decay=1.5), "--rms-decay must be in (0, 1]"),
        (dict(rms_eps=0.0), "--rms-eps must be positive, got 0.0"),
        (dict(adam_eps=0.0), "--adam-eps must be positive, got 0.0"),
        (dict(max_grad_norm=-1.0), "--max-grad-norm must be non-negative"),
        (dict(eval_epsilon=2.0), "--eval-epsilon must be in [0, 1]"),
    ],
)
def test_bad_settings_are_refused_before_training(overrides, message):
    with pytest.raises(aq.ConfigError) as error:
        aq.main(tiny(**overrides))
    assert message in str(error.value)
    assert not os.path.exists("run")  # nothing was written
    assert not children_of(os.getpid())
