"""a3c_hogwild.py end to end with tiny budgets: the step count and episode order across workers, process
hygiene (after a run, a worker that raises, a worker that dies, Ctrl-C to the whole process group, the main
process killed), truncation, the LSTM, Adam, real Atari, presets and bad input. The run contract shared
by every script is in test_run_contract.py."""

import dataclasses
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import pytest
import torch

import a3c_hogwild as a3c
from helpers import children_of, processes_in_group, read_episodes, script_path, wait_for


def tiny(preset: str = "classic", **overrides) -> a3c.Args:
    """A run of a few updates per worker: enough to exercise every code path, far too short to learn."""
    settings = dict(total_timesteps=1000, num_workers=2, eval_episodes=0, run_dir="run")
    settings.update(overrides)
    return dataclasses.replace(a3c.PRESETS[preset], **settings)


@pytest.fixture
def no_new_children():
    """Checks after the test that it left no process behind. Processes the test process had before (a
    wandb service or a Ray instance started by an earlier test in the same pytest-xdist worker) are not
    the run's, and do not count."""
    before = set(children_of(os.getpid())), set(multiprocessing.active_children())
    yield
    assert not set(children_of(os.getpid())) - before[0]
    assert not set(multiprocessing.active_children()) - before[1]


def test_workers_take_exactly_the_total_steps_and_episodes_are_written_in_step_order(no_new_children):
    summary = a3c.main(tiny(total_timesteps=3000))
    assert summary["total_steps"] == 3000 and summary["num_workers"] == 2
    steps = [int(r["global_step"]) for r in read_episodes("run")]
    assert steps and steps == sorted(steps) and steps[-1] <= 3000
    # Every step taken belongs to at most one episode.
    assert sum(int(r["episodic_length"]) for r in read_episodes("run")) <= 3000


def crash_in_worker_1(real):
    def wrapped(*args, **kwargs):
        if multiprocessing.current_process().name == "a3c_hogwild-worker-1":
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    return wrapped


def test_a_worker_that_raises_stops_every_process_and_its_error_is_printed(monkeypatch, capfd, no_new_children):
    # Workers are forked, so the patched function is the one they call.
    monkeypatch.setattr(a3c, "nstep_returns", crash_in_worker_1(a3c.nstep_returns))
    start = time.time()
    with pytest.raises(a3c.WorkerFailed, match="worker 1 raised RuntimeError: simulated crash"):
        a3c.main(tiny(total_timesteps=10_000_000))
    assert time.time() - start < 60
    assert "Traceback" in capfd.readouterr().err  # the worker's own traceback
    assert not os.path.exists("run/summary.json")


def test_a_worker_killed_outright_stops_every_process(monkeypatch, no_new_children):
    real = a3c.nstep_returns

    def die(*args, **kwargs):
        if multiprocessing.current_process().name == "a3c_hogwild-worker-0":
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    monkeypatch.setattr(a3c, "nstep_returns", die)
    with pytest.raises(a3c.WorkerFailed, match="worker 0 died with exit code -9"):
        a3c.main(tiny(total_timesteps=10_000_000))


def start_in_own_group(*flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, script_path("a3c_hogwild"), "--run-dir", "run", "--eval-episodes", "0",
                             "--num-workers", "2", *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def wait_until_gone(pgid: int, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while processes_in_group(pgid):
        assert time.time() < deadline, f"left running: {processes_in_group(pgid)}"
        time.sleep(0.1)


def test_ctrl_c_to_the_process_group_checkpoints_and_leaves_no_process():
    process = start_in_own_group("--total-timesteps", "10000000")
    wait_for(lambda: os.path.exists("run/episodes.csv") and len(read_episodes("run")) > 3, process)
    assert len(processes_in_group(process.pid)) == 3  # the main process and its two workers
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    saved_step = torch.load("run/checkpoint.pt", weights_only=True)["global_step"]
    assert saved_step > 0
    # The step it reports is the checkpoint's: no worker took a step after it was written.
    assert f"stopped by signal 2 at step {saved_step};" in output
    wait_until_gone(process.pid)


def test_killing_the_main_process_takes_its_workers_with_it():
    process = start_in_own_group("--total-timesteps", "10000000")
    wait_for(lambda: os.path.exists("run/episodes.csv") and len(read_episodes("run")) > 3, process)
    process.kill()  # SIGKILL: no handler runs; the kernel tells the workers (PR_SET_PDEATHSIG)
    process.wait()
    wait_until_gone(process.pid)


def test_truncated_episodes_bootstrap_from_their_final_observation(monkeypatch):
    # CartPole cut off at 10 steps. The check runs inside the workers: a truncation without the final
    # observation's value would crash the run; each worker that saw one leaves a file.
    real = a3c.nstep_returns

    def check(rewards, next_value, terminated, truncated, final_values, gamma):
        if truncated.any():
            assert (final_values[truncated & ~terminated] != 0).all()
            open(f"saw-truncation-{os.getpid()}", "w").close()
        return real(rewards, next_value, terminated, truncated, final_values, gamma)

    monkeypatch.setattr(a3c, "nstep_returns", check)
    gym.register("TestShortCartPole-v1", entry_point="gymnasium.envs.classic_control:CartPoleEnv", max_episode_steps=10)
    a3c.main(tiny(env_id="TestShortCartPole-v1", total_timesteps=400))
    assert len([f for f in os.listdir() if f.startswith("saw-truncation-")]) == 2
    assert all(int(r["episodic_length"]) <= 10 for r in read_episodes("run"))


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_lstm_and_both_optimisers_run_and_save(optimizer):
    summary = a3c.main(tiny(lstm=True, lstm_size=16, optimizer=optimizer, save_model=True, eval_episodes=2))
    assert summary["total_steps"] == 1000 and summary["eval"]["episodes"] == 2
    saved = torch.load("run/model.pt", weights_only=True)
    assert "lstm.weight_hh" in saved["model"] and saved["args"]["optimizer"] == optimizer
    assert all(torch.isfinite(v).all() for v in saved["model"].values())


def test_real_atari_env_with_the_paper_network():
    summary = a3c.main(tiny("atari", total_timesteps=200, num_workers=2, eval_episodes=1))
    assert summary["total_steps"] == 200
    # Whole games, true scores: Breakout's score is a non-negative whole number.
    assert summary["eval"]["mean_return"] >= 0 and float(summary["eval"]["mean_return"]).is_integer()
    model = a3c.build_agent(tiny("atari"))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(16, (8, 8), (4, 4)), (32, (4, 4), (2, 2))]
    assert model.trunk[1].out_features == 256


def test_save_model_then_evaluate_acts_the_same():
    args = tiny(num_workers=1, save_model=True, eval_episodes=3, eval_deterministic=True)
    summary = a3c.main(args)
    result = a3c.main_evaluate(a3c.EvalArgs("run/model.pt", episodes=3, seed=args.seed + 100_000, deterministic=True))
    assert result["mean_return"] == pytest.approx(summary["eval"]["mean_return"])


def test_more_workers_than_cores_is_warned_about(capsys, monkeypatch):
    monkeypatch.setattr(a3c, "available_cores", lambda: 1)
    a3c.main(tiny())
    assert "warning: 2 workers on 1 cores" in capsys.readouterr().err


def test_presets_and_overrides_from_the_command_line():
    args = a3c.parse_args(["--env-id", "Acrobot-v1"])
    assert args.preset == "classic" and args.env_id == "Acrobot-v1" and args.num_workers == 16
    args = a3c.parse_args(["atari", "--lstm"])
    assert (args.num_workers, args.num_steps, args.rms_eps, args.rms_decay, args.learning_rate) == (16, 5, 0.1, 0.99, 7e-4)
    assert args.lstm and args.lstm_size == 256 and args.anneal and args.ent_coef == 0.01 and args.vf_coef == 0.5
    assert isinstance(a3c.parse_args(["evaluate", "m.pt", "--episodes", "4"]), a3c.EvalArgs)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(env_id="CartPol-v1"), "unknown environment id 'CartPol-v1'; did you mean CartPole-v1"),
        (dict(env_id="Pendulum-v1"), "supports Discrete action spaces only, not Box(-2.0, 2.0, (1,), float32); "
                                     "for continuous actions use ppo.py, trpo.py, ddpg.py, td3.py or sac.py"),
        (dict(learning_rate=0.0), "--learning-rate must be positive, got 0.0"),
        (dict(num_workers=0), "--num-workers must be positive, got 0"),
        (dict(num_steps=0), "--num-steps must be positive, got 0"),
        (dict(total_timesteps=9, num_workers=2), "is less than one update per worker"),
        (dict(gamma=1.5), "--gamma must be in (0, 1]"),
        (dict(rms_decay=0.0), "--rms-decay must be in (0, 1]"),
        (dict(rms_eps=0.0), "--rms-eps must be positive, got 0.0"),
        (dict(max_grad_norm=0.0), "--max-grad-norm must be positive, got 0.0"),
        (dict(ent_coef=-0.01), "--ent-coef and --vf-coef must be non-negative"),
        (dict(lstm_size=0), "--lstm-size must be positive, got 0"),
    ],
)
def test_bad_settings_are_refused_before_training(overrides, message):
    with pytest.raises(a3c.ConfigError) as error:
        a3c.main(tiny(**overrides))
    assert message in str(error.value)
    assert not os.path.exists("run")  # nothing was written
